"""The `milvus` backend: a knowledge base in Milvus (Milvus Lite in a local `.db`, or a server by URI).

Two collections per knowledge base:
- `<base>_chunks`: one row per chunk and write version: the chunk (JSON), its prior, its dense vector
  (FLAT below `hnsw_threshold` rows, HNSW above; inner product on normalized vectors), its BM25 row as
  a SPARSE_FLOAT_VECTOR and its raw term counts.
- `<base>_meta`: documents, the manifest and the BM25 term table, as JSON split into parts, plus one
  `head` row naming the committed version.

BM25 is computed here, with rag.bm25's tokenizer terms, k1, b and idf, so both backends rank alike:
a row stores term_weight(tf, k1 * (1 - b + b * dl / avgdl)) per term id; a query sends idf(term) per
token, so the inner product is the BM25 score. idf lives on the query side (from the term table of the
committed version), so adding or removing documents changes it at once. avgdl is baked into the rows:
when the live avgdl drifts more than REWEIGHT_DRIFT from the one the rows were weighted with, a write
re-weights every row (the same versioned write as an update).

Crash safety: every row carries the version that wrote it. A write inserts its rows under version g,
then commits by upserting the head row {version: g, pending: whether blob "pending"@g lists documents
whose older rows are now stale}.
Readers only see rows of version <= head and not pending, so a write killed at any moment leaves the
old or the new state. After the commit, and again at the start of the next write (the repair), stale
rows and rows of uncommitted versions are deleted. Row formats, the head and the knowledge-base-level
reads: rag/stores/milvus_layout.py.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, replace

import numpy as np

from rag.records import Chunk
from rag.store import (
    FORMAT_VERSION,
    Batch,
    DocRecord,
    IndexMismatch,
    KBCorrupt,
    KBNotFound,
    Manifest,
    check_counts,
)
from rag.stores.milvus_client import collection_base, connect, disconnect, filter_in, literal, milvus_uri  # noqa: F401
from rag.stores.milvus_layout import (
    CHUNK_BYTES,
    PART_CHARS,
    Head,
    LazyDocuments,
    chunk_from_json,
    chunk_json,
    chunk_key,
    load,
    read_blob,
    read_head,
    where_of,
)
from rag.stores.milvus_terms import Terms

logger = logging.getLogger(__name__)

INSERT_BATCH = 512
ID_BATCH = 512  # ids per `in [...]` filter
HNSW = {"M": 32, "efConstruction": 80}
HNSW_EF = 128


# --- the store ----------------------------------------------------------------------------------


class MilvusStore:
    """`rag.store.Store` on Milvus. Readers hold the head they opened; `apply` commits the next one."""

    def __init__(self, client, kb: str, head: Head, manifest: Manifest, terms: Terms, *, hnsw_threshold: int,
                 fresh: bool = False) -> None:
        self.client, self.kb, self.hnsw_threshold = client, kb, hnsw_threshold
        base = collection_base(kb)
        self.chunks_name, self.meta_name = f"{base}_chunks", f"{base}_meta"
        self.head, self._manifest, self.terms = head, manifest, terms
        self._fresh = fresh  # (re)create the collections at the first write

    # --- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, settings, *, create: Manifest | None = None) -> MilvusStore:
        """Open `settings.kb` at its committed version, or (create) drop it and start an empty one."""
        client, kb, threshold = connect(settings), settings.kb, settings.hnsw_threshold
        if create is not None:
            empty = replace(create, backend="milvus", version=0, counts={"documents": 0, "chunks": 0})
            return cls(client, kb, Head(), empty, Terms(), hnsw_threshold=threshold, fresh=True)
        meta, where = f"{collection_base(kb)}_meta", where_of(kb)
        head = read_head(client, meta)
        if head is None:
            raise KBNotFound(f"no knowledge base {kb!r} in Milvus at {milvus_uri(settings)}; "
                             f"create it with `python -m ingest PATH --kb {kb}`")
        manifest = Manifest.from_dict(json.loads(read_blob(client, meta, "manifest", head.version, where)), where=where)
        terms = Terms(**json.loads(read_blob(client, meta, "bm25", head.version, where)))
        store = cls(client, kb, head, manifest, terms, hnsw_threshold=threshold)
        load(client, store.chunks_name)
        store._check()
        return store

    @property
    def _where(self) -> str:
        return where_of(self.kb)

    def _check(self) -> None:
        """Refuse a collection that disagrees with its manifest, or BM25 terms from another tokenizer."""
        from rag.text import TOKENIZER_VERSION

        rows = self._count(self.chunks_name, self.head.visible())
        check_counts(self._where, manifest=self._manifest.counts.get("chunks", -1), collection=rows,
                     bm25=self.terms.n_docs)
        if self._manifest.tokenizer != TOKENIZER_VERSION:
            raise IndexMismatch(f"{self._where}: BM25 terms were made by tokenizer {self._manifest.tokenizer!r}, this "
                                f"version uses {TOKENIZER_VERSION!r}; rebuild it with `python -m ingest PATH --rebuild`")

    def _create_collections(self, dim: int) -> None:
        from pymilvus import DataType, MilvusClient

        for name in (self.chunks_name, self.meta_name):
            if self.client.has_collection(name):
                self.client.drop_collection(name)
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=128)
        schema.add_field("chunk_id", DataType.VARCHAR, max_length=64)
        schema.add_field("doc_id", DataType.VARCHAR, max_length=2048)
        schema.add_field("version", DataType.INT64)
        schema.add_field("prior", DataType.FLOAT)
        schema.add_field("chunk", DataType.VARCHAR, max_length=CHUNK_BYTES)
        schema.add_field("tf", DataType.VARCHAR, max_length=CHUNK_BYTES)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        index = self.client.prepare_index_params()
        index.add_index(field_name="vec", index_type="FLAT", metric_type="IP")
        index.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
        for name in ("chunk_id", "doc_id", "version"):  # lookups and the visibility filter use indexes, not scans
            index.add_index(field_name=name, index_type="INVERTED")
        self.client.create_collection(self.chunks_name, schema=schema, index_params=index)
        meta = MilvusClient.create_schema(auto_id=False)
        meta.add_field("key", DataType.VARCHAR, is_primary=True, max_length=4096)
        meta.add_field("kind", DataType.VARCHAR, max_length=16)  # head | blob | doc
        meta.add_field("doc_id", DataType.VARCHAR, max_length=2048)  # document id, or blob name
        meta.add_field("version", DataType.INT64)
        meta.add_field("part", DataType.INT64)
        meta.add_field("value", DataType.VARCHAR, max_length=65_535)
        meta.add_field("v", DataType.FLOAT_VECTOR, dim=2)  # Milvus wants a vector field; unused
        index = self.client.prepare_index_params()
        index.add_index(field_name="v", index_type="FLAT", metric_type="IP")
        for name in ("kind", "doc_id", "version", "part"):
            index.add_index(field_name=name, index_type="INVERTED")
        self.client.create_collection(self.meta_name, schema=meta, index_params=index)

    # --- reading ------------------------------------------------------------------------------
    @property
    def manifest(self) -> Manifest:
        return self._manifest

    @property
    def documents(self) -> Mapping[str, DocRecord]:
        return LazyDocuments(self)

    def __len__(self) -> int:
        return int(self._manifest.counts.get("chunks", 0))

    def _count(self, collection: str, expr: str) -> int:
        rows = self.client.query(collection, filter=expr, output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def _search(self, data, field_name: str, k: int, params: dict) -> list[tuple[str, float]]:
        if k <= 0 or not len(self):
            return []
        found = self.client.search(self.chunks_name, data=[data], anns_field=field_name, limit=min(k, 16_384),
                                   filter=self.head.visible(), search_params=params, output_fields=["version"])
        return [(chunk_key(hit["key"] if "key" in hit else hit["id"]), float(hit["distance"])) for hit in found[0]]

    def search_dense(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        params = {"metric_type": "IP", "params": {"ef": max(HNSW_EF, k)} if self._manifest.dense == "hnsw" else {}}
        return self._search(np.asarray(vector, np.float32).tolist(), "vec", k, params)

    def search_sparse(self, terms: list[str], k: int) -> list[tuple[str, float]]:
        query = self.terms.query_vector(terms)
        return self._search(query, "sparse", k, {"metric_type": "IP"}) if query else []

    def _rows(self, ids: Sequence[str], fields: list[str]) -> dict[str, dict]:
        """Visible rows of these chunk ids, by chunk id."""
        out = {}
        ids = list(dict.fromkeys(ids))
        for start in range(0, len(ids), ID_BATCH):
            part = ids[start:start + ID_BATCH]
            rows = self.client.query(self.chunks_name, filter=f"{filter_in('chunk_id', part)} and {self.head.visible()}",
                                     output_fields=["chunk_id", *fields], limit=len(part))
            out.update({row["chunk_id"]: row for row in rows})
        return out

    def chunks(self, ids: Sequence[str]) -> list[Chunk]:
        rows = self._rows(ids, ["chunk"])
        missing = [i for i in ids if i not in rows]
        if missing:
            raise KBCorrupt(f"{self._where}: chunks {missing[:5]} were found by search but have no row")
        return [chunk_from_json(rows[i]["chunk"]) for i in ids]

    def priors(self, ids: Sequence[str]) -> dict[str, float]:
        return {i: float(row["prior"]) for i, row in self._rows(ids, ["prior"]).items()}

    def vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        if not len(self):
            return {}
        return {i: np.asarray(row["vec"], np.float32) for i, row in self._rows(ids, ["vec"]).items()}

    token_codec = None  # token vectors (late interaction) are kept by the files store only

    def token_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        return {}

    def stats(self) -> dict:
        return {
            "documents": int(self._manifest.counts.get("documents", 0)),
            "chunks": len(self),
            "dense_index": self._manifest.dense,
            "vocabulary": len(self.terms.terms),
            "embedder": self._manifest.embedder.id,
            "updated": self._manifest.updated,
            "store": "milvus",
        }

    def document(self, doc_id: str) -> DocRecord | None:
        """One document at the committed version, or None."""
        rows = self.client.query(self.meta_name, filter=f'kind == "doc" and doc_id == {literal(doc_id)} and '
                                 f"{self.head.visible_docs()}", output_fields=["part", "value"], limit=16_384)
        if not rows:
            return None
        return DocRecord(**json.loads("".join(r["value"] for r in sorted(rows, key=lambda r: r["part"]))))

    def document_ids(self) -> Iterator[str]:
        """Ids of the documents at the committed version."""
        for row in self._iterate(self.meta_name, f'kind == "doc" and part == 0 and {self.head.visible_docs()}', ["doc_id"]):
            yield row["doc_id"]

    def _iterate(self, collection: str, expr: str, fields: list[str]) -> Iterator[dict]:
        it = self.client.query_iterator(collection, batch_size=1000, filter=expr, output_fields=fields)
        try:
            while batch := it.next():
                yield from batch
        finally:
            it.close()

    # --- writing ------------------------------------------------------------------------------
    def apply(self, add: Batch, remove: set[str], manifest: Manifest) -> None:
        if add.codec is not None or (add.tokens is not None and len(add.tokens)):
            raise ValueError("the milvus store keeps no token vectors (late_interaction works on the files store)")
        if self._fresh:
            self._create_collections(manifest.embedder.dim)
            self._fresh = False
        self._repair()
        g = self.head.version + 1
        gone = sorted(set(remove) | {d.id for d in add.docs})
        old = self._live_rows(gone, ["tf"])
        terms = self.terms.copy()
        terms.remove([{int(t): tf for t, tf in json.loads(r["tf"]).items()} for r in old])
        counts = terms.add(list(add.terms))
        stale_chunks = {r["doc_id"] for r in old}  # documents whose older chunk rows this write supersedes
        rows = [(c, v, p, tf) for c, v, p, tf in zip(add.chunks, self._as_rows(add.vectors), add.priors, counts)]
        if terms.drifted():  # re-weight every live row: rewrite it under version g
            terms.weighted_avgdl = terms.avgdl
            kept = [r for r in self._live_rows(None, ["chunk", "prior", "tf", "vec"]) if r["doc_id"] not in stale_chunks]
            stale_chunks |= {r["doc_id"] for r in kept}
            rows += [(chunk_from_json(r["chunk"]), np.asarray(r["vec"], np.float32), r["prior"],
                      {int(t): tf for t, tf in json.loads(r["tf"]).items()}) for r in kept]
        n_chunks = len(self) - len(old) + len(add.chunks)
        stale_docs = self._existing_docs(gone)
        n_docs = int(self._manifest.counts.get("documents", 0)) - len(stale_docs) + len(add.docs)
        self._insert_chunks(rows, terms, g)
        self._insert_docs(add.docs, g)
        manifest = replace(manifest, backend="milvus", format_version=FORMAT_VERSION, version=g,
                           updated=time.strftime("%Y-%m-%dT%H:%M:%S%z"), counts={"documents": n_docs, "chunks": n_chunks},
                           dense="hnsw" if n_chunks >= self.hnsw_threshold else "flat")
        self._put_blob("manifest", json.dumps(manifest.to_dict(), ensure_ascii=False), g)
        self._put_blob("bm25", json.dumps(asdict(terms), ensure_ascii=False), g)
        committed = Head(g, tuple(sorted(stale_chunks)), tuple(sorted(stale_docs)))
        if committed.pending_chunks or committed.pending_docs:  # may be long: a blob, not the head row
            self._put_blob("pending", json.dumps([committed.pending_chunks, committed.pending_docs]), g)
        self.client.flush(self.chunks_name)
        self.client.flush(self.meta_name)
        self._write_head(committed)  # the commit: readers now see version g
        self.head, self._manifest, self.terms = committed, manifest, terms
        self._collect()
        self._ensure_dense_index()

    def _existing_docs(self, doc_ids: Sequence[str]) -> set[str]:
        """Those of these documents that the committed version holds."""
        expr = f'kind == "doc" and part == 0 and {self.head.visible_docs()}'
        found = set()
        for i in range(0, len(doc_ids), ID_BATCH):
            batch = f"{filter_in('doc_id', doc_ids[i:i + ID_BATCH])} and {expr}"
            found |= {row["doc_id"] for row in self._iterate(self.meta_name, batch, ["doc_id"])}
        return found

    def _live_rows(self, doc_ids: Sequence[str] | None, fields: list[str]) -> list[dict]:
        """Visible chunk rows of these documents (all documents for None)."""
        if doc_ids is None:
            return list(self._iterate(self.chunks_name, self.head.visible(), ["doc_id", *fields]))
        rows = []
        for start in range(0, len(doc_ids), ID_BATCH):
            expr = f"{filter_in('doc_id', doc_ids[start:start + ID_BATCH])} and {self.head.visible()}"
            rows += self._iterate(self.chunks_name, expr, ["doc_id", *fields])
        return rows

    @staticmethod
    def _as_rows(vectors) -> list[np.ndarray]:
        return [] if vectors is None else list(np.asarray(vectors, np.float32))

    def _insert_chunks(self, rows: list, terms: Terms, version: int) -> None:
        for start in range(0, len(rows), INSERT_BATCH):
            self.client.insert(self.chunks_name, [
                {"key": f"{chunk.id}.{version}", "chunk_id": chunk.id, "doc_id": chunk.doc_id, "version": version,
                 "prior": float(prior), "chunk": chunk_json(chunk), "tf": json.dumps(tf), "vec": vector.tolist(),
                 "sparse": terms.row_vector(tf)}
                for chunk, vector, prior, tf in rows[start:start + INSERT_BATCH]
            ])

    def _meta_rows(self, kind: str, name: str, text: str, version: int) -> list[dict]:
        parts = [text[i:i + PART_CHARS] for i in range(0, len(text), PART_CHARS)] or [""]
        return [{"key": f"{kind}:{name}@{version}#{i}", "kind": kind, "doc_id": name, "version": version, "part": i,
                 "value": part, "v": [0.0, 0.0]} for i, part in enumerate(parts)]

    def _put_blob(self, name: str, text: str, version: int) -> None:
        rows = self._meta_rows("blob", name, text, version)
        for start in range(0, len(rows), INSERT_BATCH):
            self.client.insert(self.meta_name, rows[start:start + INSERT_BATCH])

    def _insert_docs(self, docs: Sequence[DocRecord], version: int) -> None:
        rows = [r for d in docs for r in self._meta_rows("doc", d.id, json.dumps(asdict(d), ensure_ascii=False), version)]
        for start in range(0, len(rows), INSERT_BATCH):
            self.client.insert(self.meta_name, rows[start:start + INSERT_BATCH])

    def _write_head(self, head: Head) -> None:
        value = json.dumps({"version": head.version, "pending": bool(head.pending_chunks or head.pending_docs)})
        self.client.upsert(self.meta_name, [{"key": "head", "kind": "head", "doc_id": "", "version": 0, "part": 0,
                                             "value": value, "v": [0.0, 0.0]}])
        self.client.flush(self.meta_name)

    def _delete(self, collection: str, expr: str, ids: Sequence[str] = ()) -> None:
        """Delete rows matching `expr` (and, when given, doc_id in `ids`, in batches)."""
        if not ids:
            self.client.delete(collection, filter=expr)
            return
        for start in range(0, len(ids), ID_BATCH):
            self.client.delete(collection, filter=f"{filter_in('doc_id', ids[start:start + ID_BATCH])} and {expr}")

    def _collect(self) -> None:
        """Delete what the committed head makes stale, then record that nothing is pending."""
        head = self.head
        if head.pending_chunks:
            self._delete(self.chunks_name, f"version < {head.version}", head.pending_chunks)
        if head.pending_docs:
            self._delete(self.meta_name, f'kind == "doc" and version < {head.version}', head.pending_docs)
        self._delete(self.meta_name, f'kind == "blob" and version < {head.version}')
        self.client.flush(self.chunks_name)
        self.client.flush(self.meta_name)
        self.head = Head(head.version)
        self._write_head(self.head)

    def _repair(self) -> None:
        """Remove what a killed writer left: rows of uncommitted versions, and stale rows not yet deleted."""
        self._delete(self.chunks_name, f"version > {self.head.version}")
        self._delete(self.meta_name, f'kind != "head" and version > {self.head.version}')
        if self.head.pending_chunks or self.head.pending_docs:
            self._collect()

    def _ensure_dense_index(self) -> None:
        """FLAT below hnsw_threshold rows, HNSW at or above it (as the files backend does)."""
        want = self._manifest.dense
        have = self.client.describe_index(self.chunks_name, "vec").get("index_type", "").lower()
        if have == want:
            return
        index = self.client.prepare_index_params()
        if want == "hnsw":
            index.add_index(field_name="vec", index_type="HNSW", metric_type="IP", params=HNSW)
        else:
            index.add_index(field_name="vec", index_type="FLAT", metric_type="IP")
        self.client.release_collection(self.chunks_name)
        self.client.drop_index(self.chunks_name, "vec")
        self.client.create_index(self.chunks_name, index)
        self.client.load_collection(self.chunks_name)

