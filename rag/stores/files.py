"""The `files` backend: a knowledge base is a folder of plain files, written as atomic versions.

Layout: `<index_dir>/<kb>` is a symlink to an immutable version folder
`<index_dir>/.versions/<kb>/<stamp>/` holding `manifest.json`, `chunks.jsonl`, `documents.jsonl`,
`vectors.npy`, `dense.faiss`, `prior.npy`, `bm25/*.npy|json` and, for a knowledge base that stores ColBERT
token vectors, `late/` (int8 codes, per-chunk offsets, the codec's arrays). A writer builds a new version
folder, then swaps the symlink with one atomic rename, so a reader (or a crash at any moment)
always sees a complete version. Loading checks that every part has the manifest's row count.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from rag.bm25 import BM25Index
from rag.dense import DenseIndex
from rag.late_interaction import TokenCodec, TokenVectors
from rag.records import Chunk
from rag.store import (
    FORMAT_VERSION,
    Batch,
    DocRecord,
    IndexMismatch,
    KBNotFound,
    Manifest,
    check_counts,
    check_kb_name,
    kb_path,
    read_manifest,
)

logger = logging.getLogger(__name__)

KEEP_VERSIONS = 2  # the current one and its predecessor (a reader may still be loading it)


@dataclass
class KBState:
    """Everything one version of a knowledge base holds; rows of chunks/vectors/bm25/prior align."""

    manifest: Manifest
    chunks: list[Chunk]
    documents: dict[str, DocRecord]
    dense: DenseIndex
    bm25: BM25Index
    prior: np.ndarray
    late: TokenVectors | None = None

    def check(self, where: str) -> None:
        """Raise KBCorrupt unless chunks, vectors, FAISS rows, BM25 rows, priors, token rows and the manifest agree."""
        late = {} if self.late is None else {"token rows": len(self.late)}
        check_counts(where, chunks=len(self.chunks), vectors=len(self.dense.vectors), faiss=self.dense.index.ntotal,
                     bm25=self.bm25.n_docs, prior=len(self.prior), manifest=self.manifest.counts.get("chunks", -1), **late)

    def apply(self, add: Batch, remove: set[str], *, hnsw_threshold: int) -> KBState:
        """A new state without the documents in `remove` (and any earlier version of `add.docs`), plus
        `add`; the FAISS index is built once."""
        gone = set(remove) | {d.id for d in add.docs}
        keep = np.array([c.doc_id not in gone for c in self.chunks], dtype=bool)
        dim = self.manifest.embedder.dim
        kept = np.asarray(self.dense.vectors, np.float32).reshape(-1, dim)[keep]
        added = np.zeros((0, dim), np.float32) if add.vectors is None else np.asarray(add.vectors, np.float32)
        chunks = [c for c, k in zip(self.chunks, keep) if k] + list(add.chunks)
        documents = {**{d: r for d, r in self.documents.items() if d not in gone}, **{d.id: d for d in add.docs}}
        return KBState(
            manifest=replace(self.manifest, counts={"documents": len(documents), "chunks": len(chunks)}),
            chunks=chunks,
            documents=documents,
            dense=DenseIndex.build(np.concatenate([kept, added]), dim=dim, hnsw_threshold=hnsw_threshold),
            bm25=self.bm25.subset(keep).appended(list(add.terms)),
            prior=np.concatenate([self.prior[keep], np.asarray(add.priors, np.float32)]).astype(np.float32),
            late=self._late(add, keep),
        )

    def _late(self, add: Batch, keep: np.ndarray) -> TokenVectors | None:
        """The token vectors after a write: kept rows, then the batch's; a codec only starts an empty store."""
        if add.codec is not None:
            if self.late is not None or self.chunks:
                raise ValueError("a token codec is fitted once, at a knowledge base's first write")
            base = TokenVectors.empty(add.codec)
        elif self.late is None:
            if add.tokens is not None and len(add.tokens):
                raise ValueError("this knowledge base stores no token vectors")
            return None
        else:
            base = self.late
        if add.tokens is None and len(add.chunks):
            raise ValueError("this knowledge base stores token vectors: the batch has none")
        return base.rebuilt(keep, list(add.tokens or []))


def empty_state(manifest: Manifest) -> KBState:
    """A knowledge base with no documents yet."""
    dim = manifest.embedder.dim
    dense = DenseIndex.build(np.zeros((0, dim), np.float32), dim=dim, hnsw_threshold=1 << 30)
    return KBState(manifest, [], {}, dense, BM25Index.empty(), np.zeros(0, np.float32))


def _chunk_to_json(chunk: Chunk) -> str:
    row = asdict(chunk)
    row["heading_path"] = list(chunk.heading_path)
    return json.dumps(row, ensure_ascii=False)


def _chunk_from_json(line: str) -> Chunk:
    row = json.loads(line)
    row["heading_path"] = tuple(row["heading_path"])
    return Chunk(**row)


def load_state(index_dir: Path, kb: str) -> KBState:
    """Load the current version of `kb` into memory (vectors memory-mapped); checks that its parts agree."""
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
    prior = np.load(folder / "prior.npy", allow_pickle=False)
    late = TokenVectors.load(folder / "late") if (folder / "late").is_dir() else None
    state = KBState(manifest, chunks, documents, DenseIndex.load(folder), BM25Index.load(folder / "bm25"), prior, late)
    state.check(f"knowledge base {kb!r} ({folder})")
    return state


def write_state(index_dir: Path, kb: str, state: KBState) -> KBState:
    """Write `state` as a new version folder and atomically make it current; returns it as written."""
    index_dir = Path(index_dir)
    versions = index_dir / ".versions" / check_kb_name(kb)
    versions.mkdir(parents=True, exist_ok=True)
    stamp = f"{time.time_ns():020d}-{os.getpid()}"  # sorts by creation time
    tmp = versions / f".tmp-{stamp}"
    tmp.mkdir()
    manifest = replace(
        state.manifest, format_version=FORMAT_VERSION, backend="files", updated=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        counts={"documents": len(state.documents), "chunks": len(state.chunks)}, dense=state.dense.kind,
        version=state.manifest.version + 1,
    )
    state = replace(state, manifest=manifest)
    state.check(f"knowledge base {kb!r} (being written)")
    with (tmp / "chunks.jsonl").open("w", encoding="utf-8") as fh:
        fh.writelines(_chunk_to_json(c) + "\n" for c in state.chunks)
    with (tmp / "documents.jsonl").open("w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(asdict(d), ensure_ascii=False) + "\n" for d in state.documents.values())
    state.dense.save(tmp)
    state.bm25.save(tmp / "bm25")
    np.save(tmp / "prior.npy", np.asarray(state.prior, np.float32), allow_pickle=False)
    if state.late is not None:
        state.late.save(tmp / "late")
    (tmp / "manifest.json").write_text(json.dumps(manifest.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
    _fsync_tree(tmp)
    final = versions / stamp
    os.rename(tmp, final)
    _swap_symlink(kb_path(index_dir, kb), final)
    _prune(versions, keep=final)
    return state


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


def with_current_tokenizer(state: KBState) -> KBState:
    """`state` itself when its BM25 rows came from today's tokenizer; else a copy whose BM25 index
    is rebuilt from the stored chunk texts (no re-embedding) and whose manifest names the tokenizer."""
    from rag.text import TOKENIZER_VERSION, tokenize

    if state.manifest.tokenizer == TOKENIZER_VERSION:
        return state
    logger.warning(
        "knowledge base %r: BM25 terms were made by tokenizer %r, this version uses %r; re-tokenizing "
        "%d chunks (the next `python -m ingest` of this knowledge base stores the new terms)",
        state.manifest.kb, state.manifest.tokenizer, TOKENIZER_VERSION, len(state.chunks),
    )
    bm25 = BM25Index.from_tokens([tokenize(c.text) for c in state.chunks], state.bm25.params)
    return replace(state, bm25=bm25, manifest=replace(state.manifest, tokenizer=TOKENIZER_VERSION))


class FilesStore:
    """`rag.store.Store` over one loaded version; `apply` writes the next version and switches to it."""

    def __init__(self, index_dir: Path, kb: str, state: KBState, *, hnsw_threshold: int) -> None:
        self.index_dir, self.kb, self.hnsw_threshold = Path(index_dir), kb, hnsw_threshold
        self._use(state)

    @classmethod
    def open(cls, settings, *, create: Manifest | None = None) -> FilesStore:
        """Load `settings.kb` (re-tokenizing BM25 in memory if the tokenizer changed), or start `create`."""
        index_dir = Path(settings.index_dir)
        state = empty_state(create) if create is not None else with_current_tokenizer(load_state(index_dir, settings.kb))
        return cls(index_dir, settings.kb, state, hnsw_threshold=settings.hnsw_threshold)

    def _use(self, state: KBState) -> None:
        self.state = state
        self._row = {c.id: i for i, c in enumerate(state.chunks)}

    @property
    def manifest(self) -> Manifest:
        return self.state.manifest

    @property
    def documents(self) -> dict[str, DocRecord]:
        return self.state.documents

    def __len__(self) -> int:
        return len(self.state.chunks)

    def _ids(self, rows: np.ndarray, scores: np.ndarray) -> list[tuple[str, float]]:
        chunks = self.state.chunks
        return [(chunks[r].id, float(s)) for r, s in zip(rows.tolist(), scores.tolist())]

    def search_dense(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        return self._ids(*self.state.dense.search(vector, k))

    def search_sparse(self, terms: list[str], k: int) -> list[tuple[str, float]]:
        return self._ids(*self.state.bm25.top_k(terms, k))

    def chunks(self, ids: Sequence[str]) -> list[Chunk]:
        return [self.state.chunks[self._row[i]] for i in ids]

    def priors(self, ids: Sequence[str]) -> dict[str, float]:
        return {i: float(self.state.prior[self._row[i]]) for i in ids}

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        vectors = self.state.dense.vectors
        return {i: np.asarray(vectors[self._row[i]]) for i in ids if i in self._row}

    @property
    def token_codec(self) -> TokenCodec | None:
        return None if self.state.late is None else self.state.late.codec

    def token_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        late = self.state.late
        return {} if late is None else {i: late.row(self._row[i]) for i in ids if i in self._row}

    def apply(self, add: Batch, remove: set[str], manifest: Manifest) -> None:
        state = replace(self.state, manifest=manifest).apply(add, remove, hnsw_threshold=self.hnsw_threshold)
        self._use(write_state(self.index_dir, self.kb, state))

    def stats(self) -> dict:
        return {
            "documents": len(self.state.documents),
            "chunks": len(self.state.chunks),
            "dense_index": self.state.dense.kind,
            "vocabulary": len(self.state.bm25.vocab),
            "embedder": self.manifest.embedder.id,
            "updated": self.manifest.updated,
            "store": "files",
        }
