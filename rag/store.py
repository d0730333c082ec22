"""Knowledge-base folders: manifest, chunks, dense (FAISS) and sparse (BM25) indexes.

Layout: `<index_dir>/<kb>` is a symlink to an immutable version folder
`<index_dir>/.versions/<kb>/<stamp>/` holding `manifest.json`, `chunks.jsonl`, `documents.jsonl`,
`vectors.npy`, `dense.faiss` and `bm25/*.npy|json`. A writer builds a new version folder, then
swaps the symlink with one atomic rename, so a reader (or a crash at any moment) always sees a
complete version. `<index_dir>/.<kb>.lock` serialises writers. Nothing is pickled.

Store contract (so another engine can replace the files): `upsert`, `delete`, `search_dense`,
`search_sparse`, `stats`; higher scores are better; ids are strings.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

from rag.bm25 import BM25Index
from rag.dense import DenseIndex
from rag.records import Chunk

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
KEEP_VERSIONS = 2  # the current one and its predecessor (a reader may still be loading it)
_KB_NAME = re.compile(r"^[\w\-\u4e00-\u9fff]{1,64}$")


class IndexMismatch(RuntimeError):
    """The knowledge base was built with settings (embedder, format) that differ from the current ones."""


class KBLocked(RuntimeError):
    """Another process is writing this knowledge base."""


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


def read_manifest(index_dir: Path, kb: str) -> dict | None:
    """The current manifest, or None when the knowledge base does not exist yet."""
    path = kb_path(index_dir, kb) / "manifest.json"
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexMismatch(
            f"{path}: index format {manifest.get('format_version')} is not the supported {FORMAT_VERSION}; "
            f"rebuild it with `python -m ingest PATH --kb {kb} --rebuild`"
        )
    return manifest


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


def delete_kb(index_dir: Path, kb: str) -> None:
    """Remove a knowledge base: its link, every version and its uploads folder (under the writer lock)."""
    index_dir = Path(index_dir)
    if current_version(index_dir, kb) is None:
        raise KBNotFound(f"no knowledge base {kb!r}")
    lock = kb_lock(index_dir, kb)
    try:
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


@dataclass
class KBState:
    """Everything one version of a knowledge base holds; rows of chunks/vectors/bm25 align."""

    manifest: dict
    chunks: list[Chunk]
    documents: dict[str, DocRecord]
    dense: DenseIndex
    bm25: BM25Index

    # --- store contract ---------------------------------------------------------------------
    def search_dense(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(row, cosine) pairs, best first."""
        rows, scores = self.dense.search(vector, k)
        return list(zip(rows.tolist(), scores.tolist()))

    def search_sparse(self, query_terms: list[str], k: int) -> list[tuple[int, float]]:
        """(row, BM25 score) pairs, best first; only rows sharing a term with the query."""
        rows, scores = self.bm25.top_k(query_terms, k)
        return list(zip(rows.tolist(), scores.tolist()))

    def apply(
        self,
        *,
        remove: set[str] = frozenset(),
        docs: list[DocRecord] = (),
        chunks: list[Chunk] = (),
        vectors: np.ndarray | None = None,
        tokens: list[list[str]] = (),
        hnsw_threshold: int,
    ) -> KBState:
        """A new state without the documents in `remove` (and any earlier version of `docs`), plus
        `docs` with their chunks, vectors and BM25 tokens; the FAISS index is built once."""
        gone = set(remove) | {d.id for d in docs}
        keep = np.array([c.doc_id not in gone for c in self.chunks], dtype=bool)
        dim = int(self.manifest["embedder"]["dim"])
        kept = np.asarray(self.dense.vectors, np.float32).reshape(-1, dim)[keep]
        added = np.zeros((0, dim), np.float32) if vectors is None else vectors
        return KBState(
            manifest=self.manifest,
            chunks=[c for c, k in zip(self.chunks, keep) if k] + list(chunks),
            documents={**{d: r for d, r in self.documents.items() if d not in gone}, **{d.id: d for d in docs}},
            dense=DenseIndex.build(np.concatenate([kept, added]), dim=dim, hnsw_threshold=hnsw_threshold),
            bm25=self.bm25.subset(keep).appended(list(tokens)),
        )

    def delete(self, doc_ids: set[str], *, hnsw_threshold: int) -> KBState:
        """A new state without the chunks and records of `doc_ids`."""
        return self.apply(remove=doc_ids, hnsw_threshold=hnsw_threshold)

    def upsert(
        self,
        docs: list[DocRecord],
        chunks: list[Chunk],
        vectors: np.ndarray,
        tokens: list[list[str]],
        *,
        hnsw_threshold: int,
    ) -> KBState:
        """A new state where `docs` (and their chunks) replace any earlier version of them."""
        return self.apply(docs=docs, chunks=chunks, vectors=vectors, tokens=tokens, hnsw_threshold=hnsw_threshold)

    def stats(self) -> dict:
        """Counts and provenance for display."""
        return {
            "documents": len(self.documents),
            "chunks": len(self.chunks),
            "dense_index": self.dense.kind,
            "vocabulary": len(self.bm25.vocab),
            "embedder": self.manifest.get("embedder", {}).get("id"),
            "updated": self.manifest.get("updated"),
        }


def empty_state(manifest: dict, dim: int) -> KBState:
    """A knowledge base with no documents yet."""
    return KBState(manifest, [], {}, DenseIndex.build(np.zeros((0, dim), np.float32), dim=dim, hnsw_threshold=1 << 30), BM25Index.empty())


def _chunk_to_json(chunk: Chunk) -> str:
    row = asdict(chunk)
    row["heading_path"] = list(chunk.heading_path)
    return json.dumps(row, ensure_ascii=False)


def _chunk_from_json(line: str) -> Chunk:
    row = json.loads(line)
    row["heading_path"] = tuple(row["heading_path"])
    return Chunk(**row)


def load_state(index_dir: Path, kb: str) -> KBState:
    """Load the current version of `kb` into memory (vectors memory-mapped)."""
    manifest = read_manifest(index_dir, kb)
    if manifest is None:
        raise KBNotFound(f"no knowledge base {kb!r} in {index_dir}; create it with `python -m ingest PATH --kb {kb}`")
    folder = kb_path(index_dir, kb).resolve()  # pin the version even if a writer swaps meanwhile
    with (folder / "chunks.jsonl").open(encoding="utf-8") as fh:
        chunks = [_chunk_from_json(line) for line in fh if line.strip()]
    documents = {}
    with (folder / "documents.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                record = DocRecord(**json.loads(line))
                documents[record.id] = record
    return KBState(manifest, chunks, documents, DenseIndex.load(folder), BM25Index.load(folder / "bm25"))


def write_state(index_dir: Path, kb: str, state: KBState) -> Path:
    """Write `state` as a new version folder and atomically make it current; returns the folder."""
    index_dir = Path(index_dir)
    versions = index_dir / ".versions" / check_kb_name(kb)
    versions.mkdir(parents=True, exist_ok=True)
    stamp = f"{time.time_ns():020d}-{os.getpid()}"  # sorts by creation time
    tmp = versions / f".tmp-{stamp}"
    tmp.mkdir()
    manifest = {**state.manifest, "format_version": FORMAT_VERSION, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    manifest["counts"] = {"documents": len(state.documents), "chunks": len(state.chunks)}
    manifest["dense"] = {"type": state.dense.kind}
    with (tmp / "chunks.jsonl").open("w", encoding="utf-8") as fh:
        fh.writelines(_chunk_to_json(c) + "\n" for c in state.chunks)
    with (tmp / "documents.jsonl").open("w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(asdict(d), ensure_ascii=False) + "\n" for d in state.documents.values())
    state.dense.save(tmp)
    state.bm25.save(tmp / "bm25")
    (tmp / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
    _fsync_tree(tmp)
    final = versions / stamp
    os.rename(tmp, final)
    _swap_symlink(kb_path(index_dir, kb), final)
    _prune(versions, keep=final)
    state.manifest = manifest
    return final


def _fsync_tree(folder: Path) -> None:
    """Flush every file of a new version before it becomes visible."""
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())


def _swap_symlink(link: Path, target: Path) -> None:
    """Point `link` at `target` with one atomic rename (a real folder in the way is refused)."""
    if link.exists() and not link.is_symlink():
        raise IndexMismatch(f"{link} is a plain folder, not a knowledge base written by this version")
    tmp_link = link.with_name(f".{link.name}.link-{os.getpid()}")
    tmp_link.unlink(missing_ok=True)
    os.symlink(os.path.relpath(target, link.parent), tmp_link)
    os.replace(tmp_link, link)


def _prune(versions: Path, keep: Path) -> None:
    """Remove old versions (all but the newest KEEP_VERSIONS) and stale temp folders."""
    done = sorted((p for p in versions.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)
    for old in done[:-KEEP_VERSIONS]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)
    for tmp in versions.glob(".tmp-*"):
        try:
            pid = int(tmp.name.split("-")[-1])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def with_manifest(state: KBState, **updates) -> KBState:
    """A copy of `state` with manifest keys replaced."""
    return replace(state, manifest={**state.manifest, **updates})


def with_current_tokenizer(state: KBState) -> KBState:
    """`state` itself when its BM25 rows came from today's tokenizer; else a copy whose BM25 index
    is rebuilt from the stored chunk texts (no re-embedding) and whose manifest names the tokenizer."""
    from rag.text import TOKENIZER_VERSION, tokenize

    if state.manifest.get("tokenizer") == TOKENIZER_VERSION:
        return state
    logger.warning(
        "knowledge base %r: BM25 terms were made by tokenizer %r, this version uses %r; re-tokenizing "
        "%d chunks (the next `python -m ingest` of this knowledge base stores the new terms)",
        state.manifest.get("kb"), state.manifest.get("tokenizer"), TOKENIZER_VERSION, len(state.chunks),
    )
    bm25 = BM25Index.from_tokens([tokenize(c.text) for c in state.chunks], state.bm25.params)
    return replace(state, bm25=bm25, manifest={**state.manifest, "tokenizer": TOKENIZER_VERSION})
