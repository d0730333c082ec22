"""What API requests share: the embedders, the LLM client and its queue, loaded knowledge-base versions.

Requests never change these objects: per-request settings make a (cached) `Retriever` of their own over
the shared, read-only state of one knowledge-base version.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from rag import store
from rag.retrieve import Retriever
from rag.settings import Settings

LOADED_VERSIONS = 4  # knowledge-base versions kept in memory (a re-ingest makes a new one)
RETRIEVERS = 32  # (version, request settings) combinations kept


class LLMBusy(RuntimeError):
    """The LLM queue is full; the client should retry later (HTTP 429)."""


class LLMGate:
    """At most `parallel` LLM requests at once and `queue` more waiting; beyond that, LLMBusy at once.

    `admit()` decides at once (so the HTTP status can still be 429); the admission, used as a context
    manager, waits for a slot and frees it and itself on exit, in whichever thread runs the request.
    """

    def __init__(self, parallel: int, queue: int) -> None:
        self.parallel, self.queue = parallel, queue
        self._slots = threading.Semaphore(parallel)
        self._lock = threading.Lock()
        self.admitted = 0  # running + waiting

    def admit(self) -> Admission:
        with self._lock:
            if self.admitted >= self.parallel + self.queue:
                raise LLMBusy(f"{self.admitted} chat requests are running or waiting for the LLM "
                              f"(limit {self.parallel} + {self.queue}); retry later")
            self.admitted += 1
        return Admission(self)

    def _leave(self) -> None:
        with self._lock:
            self.admitted -= 1


class Admission:
    """One admitted LLM request: `with admission:` waits for a slot; leaving frees the slot and the place."""

    def __init__(self, gate: LLMGate) -> None:
        self.gate = gate

    def __enter__(self) -> Admission:
        try:
            self.gate._slots.acquire()
        except BaseException:
            self.gate._leave()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.gate._slots.release()
        self.gate._leave()

    def cancel(self) -> None:
        """Give the place back without having run (the request ended before it started)."""
        self.gate._leave()


@dataclass(frozen=True)
class Opened:
    """One knowledge-base version ready to search, and the name of that version."""

    retriever: Retriever
    version: str


class Resources:
    """Process-wide state of the API server, built once from the server's settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.index_dir = Path(settings.index_dir)
        self.gate = LLMGate(settings.api_llm_parallel, settings.api_llm_queue)
        self._lock = threading.Lock()
        self._loaded: OrderedDict[tuple[str, str], Retriever] = OrderedDict()
        self._retrievers: OrderedDict[tuple[str, str, str], Retriever] = OrderedDict()
        self._llm = None

    # --- models -----------------------------------------------------------------------------

    def embedder(self, settings: Settings):
        """The embedder for concrete settings (one knowledge base's), loaded once per process and model."""
        from rag.embed import load_embedder

        with self._lock:  # load_embedder caches per model; the lock makes concurrent first uses load it once
            return load_embedder(settings)

    @property
    def llm(self):
        """The LLM client; the embedded llama.cpp server starts on first use (and restarts if it died)."""
        from rag.llm import client_from_settings

        with self._lock:
            if self._llm is None:
                self._llm = client_from_settings(self.settings)
            return self._llm

    def forget_llm(self) -> None:
        """Drop the client after a failure, so the next request starts a fresh embedded server."""
        with self._lock:
            self._llm = None

    def reranker(self, settings: Settings):
        from rag.rerank import load_reranker

        return load_reranker(settings)

    # --- knowledge bases ----------------------------------------------------------------------

    def kb_settings(self, kb: str, **overrides) -> Settings:
        """The server's settings for `kb` with validated per-request overrides (nothing shared changes)."""
        values = self.settings.model_dump() | overrides | {"kb": store.check_kb_name(kb)}
        return Settings.model_validate(values)

    def open(self, settings: Settings) -> Opened:
        """The current version of `settings.kb`, loaded once per version and shared by requests."""
        kb = settings.kb
        version = store.kb_version(settings)
        if version is None:
            raise store.KBNotFound(f"no knowledge base {kb!r}")
        key = (kb, version, settings.model_dump_json())
        with self._lock:
            if key in self._retrievers:
                self._retrievers.move_to_end(key)
                return Opened(self._retrievers[key], version)
            base = self._loaded.get((kb, version))
        if base is None:
            base, version = self._load(kb, version)
            key = (kb, version, key[2])
        retriever = base.with_settings(settings)
        with self._lock:
            _put(self._loaded, (kb, version), base, LOADED_VERSIONS)
            _put(self._retrievers, key, retriever, RETRIEVERS)
        return Opened(retriever, version)

    def _load(self, kb: str, version: str) -> tuple[Retriever, str]:
        """Load the current version; version names only grow, so the same name before and after the load
        proves which version was read (a writer may swap it meanwhile: then read again)."""
        from rag.retrieve import open_retriever

        for _ in range(5):
            base = open_retriever(self.kb_settings(kb), embedders=self.embedder)
            after = store.kb_version(base.settings)
            if after == version:
                return base, version
            if after is None:
                raise store.KBNotFound(f"no knowledge base {kb!r}")
            version = after
        raise store.KBLocked(f"knowledge base {kb!r} changed during every load; retry later")


def _put(cache: OrderedDict, key, value, limit: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)
