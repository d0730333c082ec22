"""Reranking stage: the bundled ONNX cross-encoder, a local CrossEncoder, an HTTP `/rerank` service, or none."""

from __future__ import annotations

import functools
import logging
from typing import Protocol

import httpx

from rag.records import Hit
from rag.settings import BUNDLED_RERANKER, Settings
from rag.text import language, question_language

logger = logging.getLogger(__name__)


class Reranker(Protocol):
    """Scores (query, passage) pairs; higher is more relevant."""

    def scores(self, query: str, passages: list[str]) -> list[float]: ...


def applies(reranker: Reranker, query: str, hits: list[Hit]) -> bool:
    """Whether a reranker trained on some languages only (`languages`) reads this question and its passages."""
    languages = getattr(reranker, "languages", None)
    if not languages:
        return True
    return question_language(query) in languages and language(" ".join(h.chunk.text for h in hits[:5])) in languages


def rerank(reranker: Reranker, query: str, hits: list[Hit]) -> list[Hit]:
    """Set `hit.rerank` on every hit and return them best first (stable on ties); hits in a language the
    reranker does not read keep their fused order and no rerank score."""
    if not hits or not applies(reranker, query, hits):
        return hits
    for hit, score in zip(hits, reranker.scores(query, [h.chunk.text for h in hits]), strict=True):
        hit.rerank = float(score)
    return sorted(hits, key=lambda h: -h.rerank)


class CrossEncoderReranker:
    """A sentence-transformers CrossEncoder from an HF id (already cached) or a local folder."""

    def __init__(self, name: str, device: str, batch_size: int = 16) -> None:
        from sentence_transformers import CrossEncoder

        from rag.embed import ModelNotAvailable

        try:
            self.model = CrossEncoder(name, device=device, local_files_only=True)
        except Exception as e:  # noqa: BLE001
            raise ModelNotAvailable(
                f"reranker {name!r} could not be loaded from local files ({e.__class__.__name__}: {e}). "
                "There is no network here: download it on a connected machine "
                f"(`huggingface-cli download {name}`), copy the folder over and set RAG_RERANKER to it."
            ) from e
        self.batch_size = batch_size

    def scores(self, query: str, passages: list[str]) -> list[float]:
        """Raw model scores for each passage."""
        out = self.model.predict([(query, p) for p in passages], batch_size=self.batch_size, show_progress_bar=False)
        return [float(s) for s in out]


class HTTPReranker:
    """Client for the `/rerank` API served by vLLM, Infinity (documents) and TEI (texts)."""

    def __init__(self, url: str, model: str = "", timeout_s: float = 30.0) -> None:
        self.url = url
        self.model = model
        self.client = httpx.Client(timeout=timeout_s)

    def scores(self, query: str, passages: list[str]) -> list[float]:
        """Scores in passage order, whichever of the two response shapes the server uses."""
        body = {"query": query, "documents": passages, "texts": passages, "return_text": False}
        if self.model:
            body["model"] = self.model
        try:
            response = self.client.post(self.url, json=body)
            response.raise_for_status()
        except httpx.HTTPError as e:
            raise RuntimeError(f"reranker at {self.url} failed: {e}") from e
        data = response.json()
        results = data["results"] if isinstance(data, dict) else data
        out = [0.0] * len(passages)
        for item in results:
            out[int(item["index"])] = float(item.get("relevance_score", item.get("score", 0.0)))
        return out


def bundled_reranker(settings: Settings) -> Reranker:
    """The bundled int8 ms-marco-MiniLM-L-12-v2 cross-encoder on onnxruntime (provisioned on first use)."""
    from rag.models.onnx_bundle import RERANKER_EN, model_dir
    from rag.onnx_models import OnnxCrossEncoder

    return OnnxCrossEncoder(model_dir(RERANKER_EN, settings.cache_dir), threads=settings.rerank_threads,
                            batch_size=settings.rerank_batch_size, max_tokens=settings.rerank_max_tokens,
                            languages=("en",))


@functools.lru_cache(maxsize=4)
def _load(settings: Settings, device: str) -> Reranker | None:
    name = settings.reranker
    if name == "none":
        return None
    if name == BUNDLED_RERANKER:
        return bundled_reranker(settings)
    if name.startswith(("http://", "https://")):
        return HTTPReranker(name, settings.reranker_model)
    return CrossEncoderReranker(name, device, settings.rerank_batch_size)


def load_reranker(settings: Settings) -> Reranker | None:
    """The configured reranker, or None for `reranker = "none"`."""
    from rag.embed import resolve_device

    return _load(settings, resolve_device(settings.device))
