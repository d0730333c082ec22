"""Retrieval over one knowledge base: dense (FAISS), sparse (BM25) and their fusion."""

from __future__ import annotations

import functools
import logging
import time

import numpy as np

from rag import fuse
from rag.records import Hit
from rag.settings import Settings
from rag.store import KBState
from rag.text import expand_query, language, normalize, tokenize

logger = logging.getLogger(__name__)

MODES = ("dense", "bm25", "hybrid")
TOC_PENALTY = 0.5  # fused-score factor for table-of-contents / link-list chunks
SHORT_CHARS = 40  # chunks with less text than this are mostly stray titles
SHORT_PENALTY = 0.5


class Retriever:
    """Searches one loaded knowledge base; every hit keeps each stage's rank and score."""

    def __init__(self, state: KBState, embedder, settings: Settings) -> None:
        self.state = state
        self.embedder = embedder
        self.settings = settings
        self.timings_ms: dict[str, float] = {}

    @functools.cached_property
    def prior(self) -> np.ndarray:
        """Per-chunk score factor: down-weights tables of contents, link lists and stray titles."""
        from ingest.clean import is_toc_like

        factor = np.ones(len(self.state.chunks))
        for row, chunk in enumerate(self.state.chunks):
            if is_toc_like(chunk.text):
                factor[row] *= TOC_PENALTY
            if len(chunk.text.strip()) < SHORT_CHARS:
                factor[row] *= SHORT_PENALTY
        return factor

    @functools.cached_property
    def corpus_language(self) -> str:
        """'zh' or 'en' for the knowledge base as a whole (from a sample of its chunks)."""
        sample = self.state.chunks[:: max(1, len(self.state.chunks) // 200)]
        return language("".join(c.text[:200] for c in sample))

    def _expand(self, query: str) -> str:
        """Glossary expansion: only English questions over Chinese documents gain Chinese terms."""
        return expand_query(query) if self.corpus_language == "zh" else query

    def _timed(self, stage: str, start: float) -> None:
        self.timings_ms[stage] = self.timings_ms.get(stage, 0.0) + (time.perf_counter() - start) * 1000

    def dense_ranking(self, query: str, k: int) -> list[tuple[int, float]]:
        """(row, cosine) for the query embedded with the query prefix."""
        t = time.perf_counter()
        if self.settings.query_expansion == "both":
            query = self._expand(query)
        vector = self.embedder.encode_queries([normalize(query)])[0]
        self._timed("embed", t)
        t = time.perf_counter()
        result = self.state.search_dense(vector, k)
        self._timed("dense", t)
        return result

    def bm25_ranking(self, query: str, k: int) -> list[tuple[int, float]]:
        """(row, BM25) for the query's jieba tokens."""
        t = time.perf_counter()
        if self.settings.query_expansion != "none":
            query = self._expand(query)
        result = self.state.search_sparse(tokenize(query), k)
        self._timed("bm25", t)
        return result

    def search(self, query: str, *, mode: str | None = None, k: int | None = None) -> list[Hit]:
        """The top `k` hits for `query` in `mode` (defaults from settings)."""
        mode = mode or self.settings.retrieval_mode
        k = k or self.settings.top_k
        if mode not in MODES:
            raise ValueError(f"retrieval mode must be one of {MODES}, got {mode!r}")
        self.timings_ms = {}
        if not self.state.chunks or not query.strip():
            return []
        depth = max(self.settings.candidates, k)
        dense = self.dense_ranking(query, depth) if mode in ("dense", "hybrid") else []
        sparse = self.bm25_ranking(query, depth) if mode in ("bm25", "hybrid") else []
        t = time.perf_counter()
        hits = self._fuse(dense, sparse, mode)[:k]
        self._timed("fuse", t)
        return hits

    def _fuse(self, dense: list[tuple[int, float]], sparse: list[tuple[int, float]], mode: str) -> list[Hit]:
        """Combine the rankings, apply the chunk prior, and attach provenance."""
        s = self.settings
        if mode == "hybrid" and s.fusion == "rrf":
            fused = fuse.rrf([[r for r, _ in dense], [r for r, _ in sparse]], k=s.rrf_k)
        elif mode == "hybrid":
            fused = fuse.weighted([dict(dense), dict(sparse)], [s.dense_weight, 1 - s.dense_weight])
        else:
            fused = dict(dense or sparse)
        prior = self.prior
        fused = {row: score * prior[row] if score > 0 else score for row, score in fused.items()}
        dense_at = {row: (rank, score) for rank, (row, score) in enumerate(dense, start=1)}
        sparse_at = {row: (rank, score) for rank, (row, score) in enumerate(sparse, start=1)}
        hits = []
        for row, score in fuse.ranked(fused):
            d_rank, d_score = dense_at.get(row, (None, None))
            b_rank, b_score = sparse_at.get(row, (None, None))
            hits.append(Hit(self.state.chunks[row], d_rank, d_score, b_rank, b_score, fused=score))
        return hits


def open_retriever(settings: Settings, *, embedder=None) -> Retriever:
    """Load `settings.kb` and the embedder it was built with; refuse a mismatched embedder."""
    from pathlib import Path

    from rag import store
    from rag.embed import load_embedder

    state = store.with_current_tokenizer(store.load_state(Path(settings.index_dir), settings.kb))
    built = state.manifest["embedder"]
    embedder = embedder or load_embedder(settings)
    if built.get("id") != embedder.name or built.get("fingerprint") != embedder.fingerprint or built.get("dim") != embedder.dim:
        raise store.IndexMismatch(
            f"knowledge base {settings.kb!r} was built with embedder {built.get('id')!r} "
            f"(dim {built.get('dim')}, fingerprint {built.get('fingerprint')}), but the configured embedder is "
            f"{embedder.name!r} (dim {embedder.dim}, fingerprint {embedder.fingerprint}); set RAG_EMBEDDER to the "
            "original model or rebuild the knowledge base with `python -m ingest PATH --rebuild`"
        )
    return Retriever(state, embedder, settings)


def with_history(question: str, history: list[dict] | tuple = ()) -> str:
    """A retrieval query for a follow-up without an LLM: the last user turn, then the question."""
    earlier = [m["content"] for m in history if m.get("role") == "user" and m.get("content")]
    return f"{earlier[-1]} {question}" if earlier else question
