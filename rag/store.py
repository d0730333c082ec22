"""Knowledge bases: the store contract, the typed manifest and the one compatibility check.

Two backends implement `Store`: `files` (rag/stores/files.py: FAISS + BM25 arrays in atomic
version folders below `index_dir`, the default) and `milvus` (rag/stores/milvus.py: Milvus Lite
in a local `.db`, or a Milvus server/cluster by URI). `open_store(settings)` picks one from
`settings.store`. Higher scores are better; chunks are addressed by their string ids.
`<index_dir>/.<kb>.lock` serialises writers on both backends. Nothing is pickled.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Protocol

import numpy as np
from filelock import FileLock, Timeout

from rag.late_interaction import TokenCodec
from rag.records import Chunk

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: typed manifest, stored chunk prior and per-file script counts
_KB_NAME = re.compile(r"^[\w\-\u4e00-\u9fff]{1,64}$")


class IndexMismatch(RuntimeError):
    """The knowledge base was built with settings (embedder, format) that differ from the current ones."""


class KBCorrupt(IndexMismatch):
    """The parts of a stored knowledge base disagree (row counts, or the manifest and the collection)."""


class KBLocked(RuntimeError):
    """Another process is writing this knowledge base."""


class KBExists(FileExistsError):
    """A knowledge base of that name exists already."""


class KBNotFound(FileNotFoundError):
    """No knowledge base of that name exists in the index directory."""


def check_kb_name(kb: str) -> str:
    """Knowledge-base names are folder names: letters, digits, '_', '-', CJK; 1-64 chars."""
    if not _KB_NAME.match(kb):
        raise ValueError(f"knowledge-base name must be 1-64 letters, digits, '_' or '-', got {kb!r}")
    return kb


def kb_path(index_dir: Path, kb: str) -> Path:
    """The (symlinked) folder of a knowledge base."""
    return Path(index_dir) / check_kb_name(kb)


def list_kbs(index_dir: Path) -> list[str]:
    """Names of the knowledge bases in an index directory."""
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        return []
    return sorted(p.name for p in index_dir.iterdir() if not p.name.startswith(".") and (p / "manifest.json").is_file())


def read_manifest(index_dir: Path, kb: str) -> Manifest | None:
    """The current manifest of a `files` knowledge base, or None when it does not exist yet."""
    path = kb_path(index_dir, kb) / "manifest.json"
    if not path.is_file():
        return None
    return Manifest.from_dict(json.loads(path.read_text(encoding="utf-8")), where=str(path))


def kb_lock(index_dir: Path, kb: str, timeout: float = 0) -> FileLock:
    """An acquired writer lock for `kb`; raises KBLocked if another ingest holds it."""
    Path(index_dir).mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(Path(index_dir) / f".{check_kb_name(kb)}.lock"))
    try:
        lock.acquire(timeout=timeout)
    except Timeout as e:
        raise KBLocked(f"knowledge base {kb!r} in {index_dir} is being written by another process") from e
    return lock


def uploads_dir(index_dir: Path, kb: str) -> Path:
    """Where uploaded files of a knowledge base are kept: `<index_dir>/<kb>.uploads/`."""
    return Path(index_dir) / f"{check_kb_name(kb)}.uploads"


def current_version(index_dir: Path, kb: str) -> str | None:
    """The name of the version folder `kb` points at now (unique per write), or None when it does not exist."""
    link = kb_path(index_dir, kb)
    return link.resolve().name if (link / "manifest.json").is_file() else None


def delete_kb(settings) -> None:
    """Remove knowledge base `settings.kb` from its store, with its uploads folder (under the writer lock)."""
    index_dir, kb = Path(settings.index_dir), settings.kb
    lock = kb_lock(index_dir, kb)
    try:
        if settings.store == "milvus":
            from rag.stores.milvus_layout import drop_milvus_kb

            drop_milvus_kb(settings)
        else:
            if current_version(index_dir, kb) is None:
                raise KBNotFound(f"no knowledge base {kb!r}")
            kb_path(index_dir, kb).unlink()
            shutil.rmtree(index_dir / ".versions" / kb, ignore_errors=True)
        shutil.rmtree(uploads_dir(index_dir, kb), ignore_errors=True)
    finally:
        lock.release()


@dataclass(frozen=True)
class DocRecord:
    """One indexed document: where it came from and its cleaned text (offsets point into it)."""

    id: str
    source: str
    title: str
    text: str
    sha256: str
    meta: dict = field(default_factory=dict)


# --- the manifest -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbedderInfo:
    """What a knowledge base records about the embedder that built it."""

    id: str
    dim: int
    fingerprint: str
    query_prefix: str
    passage_prefix: str


@dataclass(frozen=True)
class Chunking:
    """The chunker settings a knowledge base was built with (a writer must use the same)."""

    chunk_tokens: int
    overlap_tokens: int


@dataclass(frozen=True)
class Manifest:
    """Everything a knowledge base says about itself; written last by every write."""

    kb: str
    embedder: EmbedderInfo
    chunking: Chunking
    tokenizer: str  # rag.text.TOKENIZER_VERSION of the stored BM25 terms
    created: str
    backend: str = "files"  # files | milvus
    # source path -> {"sha256", "doc_ids", "chunks", "removed_share", "script": [CJK chars, Latin letters]}
    files: dict = field(default_factory=dict)
    packages: dict = field(default_factory=dict)
    updated: str = ""
    counts: dict = field(default_factory=lambda: {"documents": 0, "chunks": 0})
    dense: str = "flat"  # flat | hnsw
    late: dict = field(default_factory=dict)  # token vectors stored per chunk: rag.late_interaction.record, or {}
    version: int = 0  # write generation: 1 after the first write, +1 per write
    format_version: int = FORMAT_VERSION

    @property
    def language(self) -> str:
        """'zh' or 'en' for the corpus as a whole, from the script counts stored per file at ingest."""
        from rag.text import language_of_counts

        cjk = sum(e.get("script", (0, 0))[0] for e in self.files.values())
        latin = sum(e.get("script", (0, 0))[1] for e in self.files.values())
        return language_of_counts(cjk, latin)

    def to_dict(self) -> dict:
        """The JSON form (plain dicts and lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, *, where: str) -> Manifest:
        """Parse a stored manifest; an unsupported format or a missing field names `where` and what to do."""
        kb = data.get("kb", "?")
        rebuild = f"rebuild it with `python -m ingest PATH --kb {kb} --rebuild`"
        if data.get("format_version") != FORMAT_VERSION:
            raise IndexMismatch(
                f"{where}: index format {data.get('format_version')} is not the supported {FORMAT_VERSION}; {rebuild}"
            )
        known = {f.name for f in fields(cls)}
        try:
            values = {k: v for k, v in data.items() if k in known}
            values["embedder"] = EmbedderInfo(**data["embedder"])
            values["chunking"] = Chunking(**data["chunking"])
            return cls(**values)
        except (KeyError, TypeError) as e:
            raise KBCorrupt(f"{where}: manifest is missing or has a malformed field ({e}); {rebuild}") from e


def check_compatible(manifest: Manifest, settings, embedder=None, *, writing: bool = False) -> None:
    """The one compatibility check: refuse a knowledge base built with another embedder, prefixes,
    embedder copy (fingerprint, dim) or, for a writer, chunking. Raises IndexMismatch naming every difference."""
    built = manifest.embedder
    wanted = [("embedder", built.id, settings.embedder),
              ("query_prefix", built.query_prefix, settings.query_prefix),
              ("passage_prefix", built.passage_prefix, settings.passage_prefix)]
    if embedder is not None:
        wanted += [("embedder fingerprint", built.fingerprint, embedder.fingerprint), ("embedder dim", built.dim, embedder.dim)]
    if writing:
        wanted += [("chunk_tokens", manifest.chunking.chunk_tokens, settings.chunk_tokens),
                   ("chunk_overlap", manifest.chunking.overlap_tokens, settings.chunk_overlap)]
    problems = [f"{name} {was!r} (now {now!r})" for name, was, now in wanted if was != now]
    if problems:
        raise IndexMismatch(
            f"knowledge base {manifest.kb!r} was built with " + ", ".join(problems)
            + f"; use the original settings or rebuild it with `python -m ingest PATH --kb {manifest.kb} --rebuild`"
        )


def check_counts(where: str, **counts: int) -> None:
    """Raise KBCorrupt unless every named row count is the same (chunks, vectors, BM25 rows, ...)."""
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{name} {n}" for name, n in counts.items())
        raise KBCorrupt(f"{where}: row counts disagree ({listed}); rebuild it with `python -m ingest PATH --rebuild`")


# --- the store contract -------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """One write's additions: documents, their chunks and, row-aligned with the chunks, vectors,
    BM25 terms, the chunk prior (a fused-score factor computed at ingest) and, for a knowledge base that
    stores them, each chunk's int8 token codes (with the codec on its first write)."""

    docs: Sequence[DocRecord] = ()
    chunks: Sequence[Chunk] = ()
    vectors: np.ndarray | None = None
    terms: Sequence[list[str]] = ()
    priors: Sequence[float] = ()
    tokens: Sequence[np.ndarray] | None = None
    codec: TokenCodec | None = None

    def __post_init__(self) -> None:
        n = len(self.chunks)
        rows = 0 if self.vectors is None else len(self.vectors)
        if (rows, len(self.terms), len(self.priors)) != (n, n, n) or (self.tokens is not None and len(self.tokens) != n):
            raise ValueError(f"batch rows disagree: {n} chunks, {rows} vectors, {len(self.terms)} term lists, "
                             f"{len(self.priors)} priors, {'no' if self.tokens is None else len(self.tokens)} token rows")


class Store(Protocol):
    """One knowledge base on some engine. Readers share one object: no method keeps per-call state."""

    @property
    def manifest(self) -> Manifest: ...

    @property
    def documents(self) -> Mapping[str, DocRecord]: ...

    def __len__(self) -> int:
        """Number of chunks."""

    def search_dense(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """(chunk id, inner product) for a normalized query vector, best first."""

    def search_sparse(self, terms: list[str], k: int) -> list[tuple[str, float]]:
        """(chunk id, BM25 score) of chunks sharing a term with the query, best first."""

    def chunks(self, ids: Sequence[str]) -> list[Chunk]:
        """The chunks with these ids, in that order."""

    def priors(self, ids: Sequence[str]) -> dict[str, float]:
        """The stored chunk prior of each id."""

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors of those ids that are indexed (ingest reuses them instead of re-embedding)."""

    @property
    def token_codec(self) -> TokenCodec | None:
        """The projection of the stored token vectors, or None when the knowledge base stores none."""

    def token_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored int8 token codes of those ids that have them (empty when none are stored)."""

    def apply(self, add: Batch, remove: set[str], manifest: Manifest) -> None:
        """One atomic write: drop documents `remove` (and earlier versions of `add.docs`), add `add`,
        then commit `manifest` (counts, version and time filled in). Readers see the old or the new state."""

    def stats(self) -> dict:
        """Counts and provenance for display."""


def open_store(settings, *, create: Manifest | None = None) -> Store:
    """The knowledge base `settings.kb` on `settings.store`; `create` starts an empty one (replacing any)."""
    if settings.store == "milvus":
        from rag.stores.milvus import MilvusStore

        return MilvusStore.open(settings, create=create)
    from rag.stores.files import FilesStore

    return FilesStore.open(settings, create=create)


def peek_manifest(settings) -> Manifest | None:
    """The manifest of `settings.kb` without loading its indexes; None when it does not exist."""
    if settings.store == "milvus":
        from rag.stores.milvus_layout import read_milvus_manifest

        return read_milvus_manifest(settings)
    return read_manifest(Path(settings.index_dir), settings.kb)


def kb_version(settings) -> str | None:
    """A name that changes with every write of `settings.kb` (caches key on it), or None when it does not exist."""
    if settings.store == "milvus":
        manifest = peek_manifest(settings)
        return None if manifest is None else f"{manifest.created}|{manifest.version:012d}"
    return current_version(Path(settings.index_dir), settings.kb)


def kb_names(settings) -> list[str]:
    """The knowledge bases on `settings.store`."""
    if settings.store == "milvus":
        from rag.stores.milvus_layout import list_milvus_kbs

        return list_milvus_kbs(settings)
    return list_kbs(Path(settings.index_dir))
