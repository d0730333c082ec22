"""Retrieval over one knowledge base: dense (FAISS), sparse (BM25) and their fusion."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from rag import embedder_choice, fuse, late_interaction
from rag.dense import rocchio
from rag.records import Hit
from rag.settings import BUNDLED_EN_EMBEDDER, Settings
from rag.store import Store
from rag.text import expand_query, normalize, tokenize

if TYPE_CHECKING:
    from rag.embed import Embedder
    from rag.late_interaction import ColbertEncoder

logger = logging.getLogger(__name__)

MODES = ("dense", "bm25", "hybrid")


@dataclass
class Retrieval:
    """The hits of one search and the milliseconds each stage took (embed, dense, bm25, fuse)."""

    hits: list[Hit]
    timings_ms: dict[str, float] = field(default_factory=dict)


@contextmanager
def _timed(timings: dict[str, float] | None, stage: str) -> Iterator[None]:
    """Add the block's milliseconds to `timings[stage]` (nothing when `timings` is None)."""
    t = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[stage] = timings.get(stage, 0.0) + (time.perf_counter() - t) * 1000


class Retriever:
    """Searches one knowledge base; every hit keeps each stage's rank and score.

    Shared by app sessions and eval threads: it holds no per-call state (timings come with the result).
    """

    def __init__(self, state: Store, embedder, settings: Settings, late: ColbertEncoder | None = None) -> None:
        self.state = state
        self.embedder = embedder
        self.settings = settings
        self.late = late  # the encoder of the stored token vectors, when the knowledge base has them

    def with_settings(self, settings: Settings) -> Retriever:
        """A retriever over the same knowledge base and embedder with other (per-request) retrieval settings."""
        from rag import store

        settings = embedder_choice.for_manifest(settings, self.state.manifest)
        if settings == self.settings:
            return self
        store.check_compatible(self.state.manifest, settings, self.embedder)
        return Retriever(self.state, self.embedder, settings, self.late)

    @property
    def corpus_language(self) -> str:
        """'zh' or 'en' for the knowledge base as a whole (computed at ingest, stored in the manifest)."""
        return self.state.manifest.language

    def _expand(self, query: str) -> str:
        """Glossary expansion: only English questions over Chinese documents gain Chinese terms."""
        return expand_query(query) if self.corpus_language == "zh" else query

    @property
    def dense_feedback(self) -> bool:
        """Whether dense search runs a second, Rocchio pass ("auto": for bge-small-en knowledge bases)."""
        if self.settings.dense_feedback == "auto":
            return self.settings.embedder == BUNDLED_EN_EMBEDDER
        return self.settings.dense_feedback == "on"

    def dense_ranking(self, query: str, k: int, timings: dict[str, float] | None = None) -> list[tuple[str, float]]:
        """(chunk id, cosine) for the query embedded with the query prefix (moved toward its first hits and
        searched again when `dense_feedback`)."""
        with _timed(timings, "embed"):
            if self.settings.query_expansion == "both":
                query = self._expand(query)
            vector = self.embedder.encode_queries([normalize(query)])[0]
        with _timed(timings, "dense"):
            ranking = self.state.search_dense(vector, k)
            if not (self.dense_feedback and ranking and self.settings.feedback_docs > 0):
                return ranking
            stored = self.state.vectors([key for key, _ in ranking[: self.settings.feedback_docs]])
            if not stored:
                return ranking
            return self.state.search_dense(rocchio(vector, np.stack(list(stored.values())), self.settings.feedback_weight), k)

    def bm25_ranking(self, query: str, k: int, timings: dict[str, float] | None = None) -> list[tuple[str, float]]:
        """(chunk id, BM25) for the query's jieba tokens."""
        with _timed(timings, "bm25"):
            if self.settings.query_expansion != "none":
                query = self._expand(query)
            return self.state.search_sparse(tokenize(query), k)

    def search(self, query: str, *, mode: str | None = None, k: int | None = None) -> list[Hit]:
        """The top `k` hits for `query` in `mode` (defaults from settings)."""
        return self.search_timed(query, mode=mode, k=k).hits

    def search_timed(self, query: str, *, mode: str | None = None, k: int | None = None) -> Retrieval:
        """`search` with each stage's milliseconds."""
        mode = mode or self.settings.retrieval_mode
        k = k or self.settings.top_k
        if mode not in MODES:
            raise ValueError(f"retrieval mode must be one of {MODES}, got {mode!r}")
        result = Retrieval([])
        if not len(self.state) or not query.strip():
            return result
        depth = max(self.settings.candidates, k)
        dense = self.dense_ranking(query, depth, result.timings_ms) if mode in ("dense", "hybrid") else []
        sparse = self.bm25_ranking(query, depth, result.timings_ms) if mode in ("bm25", "hybrid") else []
        with _timed(result.timings_ms, "fuse"):
            ranked = self._fuse(query, dense, sparse, mode)
        if mode == "hybrid":
            with _timed(result.timings_ms, "late"):
                ranked = self.late_rescored(query, ranked)
        result.hits = self._hits(ranked[:k], dense, sparse)
        return result

    def _fuse(self, query: str, dense: list[tuple[str, float]], sparse: list[tuple[str, float]],
              mode: str) -> list[tuple[str, float]]:
        """Combine the rankings and apply the stored chunk prior; best first."""
        fused = fuse.hybrid(dense, sparse, query, self.settings) if mode == "hybrid" else dict(dense or sparse)
        prior = self.state.priors(list(fused))
        return fuse.ranked({key: score * prior[key] if score > 0 else score for key, score in fused.items()})

    def late_rescored(self, query: str, ranked: list[tuple[str, float]]) -> list[tuple[str, float]]:
        """The fused top `late_candidates` re-ordered with the stored token vectors (rag.late_interaction),
        when the knowledge base has them, late_interaction is not "off" and the query has English text."""
        codec = self.state.token_codec
        text = late_interaction.query_text(query)
        if self.late is None or codec is None or self.settings.late_interaction == "off" or not text:
            return ranked
        head = ranked[: self.settings.late_candidates]
        stored = self.state.token_vectors([key for key, _ in head])
        if len(stored) < len(head):
            return ranked
        q = codec.project(self.late.query(normalize(text)))
        sims = {key: late_interaction.maxsim(q, codec.decode(codes)) for key, codes in stored.items()}
        return late_interaction.rescored(head, sims, self.settings.late_weight) + ranked[len(head):]

    def _hits(self, top: list[tuple[str, float]], dense: list[tuple[str, float]],
              sparse: list[tuple[str, float]]) -> list[Hit]:
        """Hits for the ranked keys, with each channel's rank and score."""
        dense_at = {key: (rank, score) for rank, (key, score) in enumerate(dense, start=1)}
        sparse_at = {key: (rank, score) for rank, (key, score) in enumerate(sparse, start=1)}
        hits = []
        for chunk, (key, score) in zip(self.state.chunks([key for key, _ in top]), top):
            d_rank, d_score = dense_at.get(key, (None, None))
            b_rank, b_score = sparse_at.get(key, (None, None))
            hits.append(Hit(chunk, d_rank, d_score, b_rank, b_score, fused=score))
        return hits


def open_retriever(settings: Settings, *, embedders: Callable[[Settings], Embedder] | None = None) -> Retriever:
    """Open `settings.kb` on `settings.store` with the embedder it was built with ("auto": the one its manifest
    records); refuse a mismatch. `embedders` loads an embedder for concrete settings (default: load_embedder)."""
    from rag import store
    from rag.embed import load_embedder

    kb = store.open_store(settings)
    settings = embedder_choice.for_manifest(settings, kb.manifest)
    embedder = (embedders or load_embedder)(settings)
    store.check_compatible(kb.manifest, settings, embedder)
    late = late_interaction.load_encoder(settings, kb.manifest.late) if kb.token_codec is not None else None
    return Retriever(kb, embedder, settings, late)


def with_history(question: str, history: list[dict] | tuple = ()) -> str:
    """A retrieval query for a follow-up without an LLM: the last user turn, then the question."""
    earlier = [m["content"] for m in history if m.get("role") == "user" and m.get("content")]
    return f"{earlier[-1]} {question}" if earlier else question
