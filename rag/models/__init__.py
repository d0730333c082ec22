"""Bundled models: provisioning into a local cache and cached loaders."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path


class ModelIntegrityError(RuntimeError):
    """A model or data file does not match its pinned checksum."""


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def package_file(package: str, relative: str, install_hint: str) -> Path:
    """A file or folder inside an installed package, found with `importlib.util.find_spec` without importing
    the package (the packages that carry models and data are never imported). Missing: an error naming the
    package or the path, and how to install it."""
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise RuntimeError(f"package {package} is not installed; run: {install_hint}")
    path = Path(list(found.submodule_search_locations)[0]) / relative
    if not path.exists():
        raise RuntimeError(f"{path} is missing; reinstall with: {install_hint}")
    return path


def pinned_package_file(package: str, relative: str, sha256: str, install_hint: str) -> Path:
    """`package_file`, checked against its pinned sha256 (ModelIntegrityError naming the file and both digests)."""
    path = package_file(package, relative, install_hint)
    actual = sha256_file(path)
    if actual != sha256:
        raise ModelIntegrityError(f"{path} has sha256 {actual}, expected {sha256}; reinstall with: {install_hint}")
    return path
