"""The embedder: a sentence-transformers model with e5-style prefixes, loaded lazily and once."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from rag.settings import BUNDLED_EMBEDDER, BUNDLED_EN_EMBEDDER, Settings

logger = logging.getLogger(__name__)


PASSAGE_CACHE_SIZE = 20_000  # vectors kept by encode_passages_cached (384-d float32: ~30 MB)


class ModelNotAvailable(RuntimeError):
    """A configured model cannot be found locally and cannot be downloaded here."""


def resolve_device(preference: str = "auto") -> str:
    """The one place the device is chosen: cuda, then mps, then cpu (or the explicit setting)."""
    import torch

    if preference != "auto":
        return preference
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def bundled_embedder_dir(cache_dir: Path) -> Path:
    """Provision (once) and return the bundled multilingual-e5-small folder."""
    from rag.models.e5 import materialize_e5

    return materialize_e5(cache_dir / "multilingual-e5-small")


def resolve_embedder_path(name: str, cache_dir: Path) -> str:
    """Map the `embedder` setting to something SentenceTransformer can open offline."""
    if name == BUNDLED_EMBEDDER:
        return str(bundled_embedder_dir(cache_dir))
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    return name


class Embedder:
    """Encodes passages and queries to L2-normalized float32 vectors."""

    def __init__(self, name: str, path: str, device: str, query_prefix: str, passage_prefix: str) -> None:
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(path, device=device, local_files_only=True)
        except Exception as e:  # noqa: BLE001 - any loader failure means "not available offline"
            raise ModelNotAvailable(
                f"embedder {name!r} could not be loaded from local files ({e.__class__.__name__}: {e}). "
                "There is no network here: download it on a connected machine "
                f"(`huggingface-cli download {name}`) and copy the folder over, then set "
                "RAG_EMBEDDER to that folder (or leave the default bundled model)."
            ) from e
        self.name = name
        self.device = device
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.dim = int(self.model.get_embedding_dimension())
        self.max_tokens = int(self.model.max_seq_length)
        self.fingerprint = _fingerprint(Path(path), self.dim) if Path(path).is_dir() else f"hf:{name}"
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Embedder tokens per text (special tokens and the passage prefix included)."""
        if not texts:
            return []
        enc = self.model.tokenizer([self.passage_prefix + t for t in texts], add_special_tokens=True)
        return [len(ids) for ids in enc["input_ids"]]

    def encode_passages(self, texts: list[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Vectors for document chunks (with the passage prefix)."""
        return self._encode([self.passage_prefix + t for t in texts], batch_size, progress)

    def encode_passages_cached(self, texts: list[str]) -> np.ndarray:
        """`encode_passages` through a bounded in-process cache (evidence sentences recur across questions).

        Thread-safe: sessions share the embedder; the cache maps text -> vector and evicts the oldest.
        """
        with self._cache_lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            vectors = self.encode_passages(missing, batch_size=64)
            with self._cache_lock:
                for text, vector in zip(missing, vectors, strict=True):
                    self._cache[text] = vector
                while len(self._cache) > PASSAGE_CACHE_SIZE:
                    self._cache.popitem(last=False)
        with self._cache_lock:
            found = [self._cache.get(t) for t in texts]
        if any(v is None for v in found):  # evicted by another thread meanwhile: compute those again
            return self.encode_passages(texts, batch_size=64)
        return np.stack(found) if found else np.zeros((0, self.dim), np.float32)

    def clear_cache(self) -> None:
        """Forget the cached passage vectors (benchmarks measure the cold case with it)."""
        with self._cache_lock:
            self._cache.clear()

    def encode_queries(self, texts: list[str], *, batch_size: int = 32) -> np.ndarray:
        """Vectors for questions (with the query prefix)."""
        return self._encode([self.query_prefix + t for t in texts], batch_size, False)

    def _encode(self, texts: list[str], batch_size: int, progress: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        vecs = self.model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.ascontiguousarray(vecs, dtype=np.float32)


def _fingerprint(folder: Path, dim: int) -> str:
    """Hash of the model's config files and weight-file sizes: changes when the model does."""
    digest = hashlib.sha256(str(dim).encode())
    for name in ("config.json", "modules.json", "tokenizer_config.json", "sentence_bert_config.json"):
        if (folder / name).is_file():
            digest.update((folder / name).read_bytes())
    for weights in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        digest.update(f"{weights.name}:{weights.stat().st_size}".encode())
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=4)
def _load(name: str, cache_dir: Path, device: str, query_prefix: str, passage_prefix: str) -> Embedder:
    if name == BUNDLED_EN_EMBEDDER:  # ONNX on the CPU
        from rag.embed_onnx import OnnxEmbedder

        return OnnxEmbedder(name, cache_dir, query_prefix, passage_prefix)
    path = resolve_embedder_path(name, cache_dir)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logger.info("loading embedder %s from %s on %s", name, path, device)
    return Embedder(name, path, device, query_prefix, passage_prefix)


@functools.lru_cache(maxsize=4)
def _load_http(url: str, model: str, cache_dir: Path, query_prefix: str, passage_prefix: str) -> Embedder:
    from rag.embed_http import HttpEmbedder

    return HttpEmbedder(url, cache_dir, query_prefix, passage_prefix, model=model)


def load_embedder(settings: Settings) -> Embedder:
    """The process-wide embedder for these settings (cached on model, device and prefixes). For a knowledge
    base, pass settings from `rag.embedder_choice` (its own embedder); "auto" with no corpus means e5."""
    from rag.embedder_choice import for_texts

    settings = for_texts(settings, ())
    if settings.embedder.startswith(("http://", "https://")):  # an OpenAI-compatible embeddings endpoint
        return _load_http(settings.embedder, settings.embedder_model, settings.cache_dir, settings.query_prefix,
                          settings.passage_prefix)
    return _load(
        settings.embedder,
        settings.cache_dir,
        resolve_device(settings.device),
        settings.query_prefix,
        settings.passage_prefix,
    )


def support_embedder(settings: Settings) -> Embedder:
    """The embedder of the citation check's cosines, whatever embeds the knowledge base: the bundled multilingual
    e5. rag.cite's threshold is set on e5's cosines, and the check compares sentences across Chinese and English
    (bge-small-en cannot read Chinese). For an e5 knowledge base it is the same loaded model."""
    return load_embedder(Settings(embedder=BUNDLED_EMBEDDER, cache_dir=settings.cache_dir, device=settings.device))
