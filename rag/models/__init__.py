"""Bundled models: provisioning into a local cache and cached loaders."""

from __future__ import annotations

import importlib.util
from pathlib import Path


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
