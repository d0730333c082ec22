"""How a knowledge base lies in Milvus, and what can be read of it without opening a store.

Row formats (a chunk as JSON, a row key `<chunk id>.<version>`), the commit record (`Head`), JSON blobs
split into parts in the meta collection, and the knowledge-base-level reads and drops the other modules
use (`read_milvus_manifest`, `list_milvus_kbs`, `drop_milvus_kb`). The store itself: rag/stores/milvus.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass

from rag.records import Chunk
from rag.store import DocRecord, KBCorrupt, KBNotFound, Manifest
from rag.stores.milvus_client import collection_base, connect, filter_in, literal, milvus_uri

PART_CHARS = 16_000  # JSON per meta row: at most 64,000 UTF-8 bytes, under VARCHAR's 65,535
CHUNK_BYTES = 65_535


def chunk_json(chunk: Chunk) -> str:
    text = json.dumps(asdict(chunk), ensure_ascii=False)
    if len(text.encode("utf-8")) > CHUNK_BYTES:
        raise ValueError(f"chunk {chunk.id} of {chunk.source} is {len(text.encode())} bytes as JSON; "
                         f"Milvus VARCHAR holds {CHUNK_BYTES}: lower chunk_tokens")
    return text


def chunk_from_json(text: str) -> Chunk:
    row = json.loads(text)
    row["heading_path"] = tuple(row["heading_path"])
    return Chunk(**row)


def chunk_key(key: str) -> str:
    """The chunk id of a row key `<chunk id>.<version>`."""
    return key.rsplit(".", 1)[0]


@dataclass(frozen=True)
class Head:
    """The commit record: the visible version and the ids whose rows below it are stale."""

    version: int = 0
    pending_chunks: tuple[str, ...] = ()  # doc ids: their chunk rows below `version` are gone
    pending_docs: tuple[str, ...] = ()  # doc ids: their document rows below `version` are gone

    def visible(self) -> str:
        """The filter selecting the committed, live rows."""
        return self._visible(self.pending_chunks)

    def visible_docs(self) -> str:
        return self._visible(self.pending_docs)

    def _visible(self, pending: Sequence[str]) -> str:
        expr = f"version <= {self.version}"
        if pending:
            expr += f" and not ({filter_in('doc_id', pending)} and version < {self.version})"
        return expr


def where_of(kb: str) -> str:
    base = collection_base(kb)
    return f"knowledge base {kb!r} (Milvus collections {base}_chunks, {base}_meta)"


def load(client, collection: str) -> None:
    """Load a collection into memory unless it is (after a restart, or in a new process, it is released)."""
    state = str(client.get_load_state(collection).get("state", ""))
    if not state.endswith("Loaded"):
        client.load_collection(collection)


def read_blob(client, meta: str, name: str, version: int, where: str) -> str:
    """The JSON text stored under `name` at `version`, joined from its parts."""
    rows = client.query(meta, filter=f'kind == "blob" and doc_id == {literal(name)} and version == {version}',
                        output_fields=["part", "value"], limit=16_384)
    if not rows:
        raise KBCorrupt(f"{where}: the committed version {version} has no {name!r}; rebuild it with "
                        "`python -m ingest PATH --rebuild`")
    return "".join(r["value"] for r in sorted(rows, key=lambda r: r["part"]))


def read_head(client, meta: str) -> Head | None:
    """The committed head in this meta collection, or None when there is none."""
    if not client.has_collection(meta):
        return None
    load(client, meta)
    rows = client.query(meta, filter='key == "head"', output_fields=["value"])
    if not rows:
        return None
    data = json.loads(rows[0]["value"])
    if not data["pending"]:
        return Head(data["version"])
    chunks, docs = json.loads(read_blob(client, meta, "pending", data["version"], meta))
    return Head(data["version"], tuple(chunks), tuple(docs))


def read_milvus_manifest(settings) -> Manifest | None:
    """The committed manifest of `settings.kb` in Milvus (nothing else is read), or None when it does not exist."""
    client, meta = connect(settings), f"{collection_base(settings.kb)}_meta"
    head = read_head(client, meta)
    if head is None:
        return None
    where = where_of(settings.kb)
    return Manifest.from_dict(json.loads(read_blob(client, meta, "manifest", head.version, where)), where=where)


def list_milvus_kbs(settings) -> list[str]:
    """Names of the knowledge bases with a committed version in this Milvus."""
    client, names = connect(settings), []
    for collection in client.list_collections():
        head = read_head(client, collection) if collection.startswith("rag_") and collection.endswith("_meta") else None
        if head is not None:
            manifest = json.loads(read_blob(client, collection, "manifest", head.version, collection))
            names.append(manifest["kb"])
    return sorted(names)


def drop_milvus_kb(settings) -> None:
    """Drop both collections of `settings.kb` (the caller holds the writer lock)."""
    client, base = connect(settings), collection_base(settings.kb)
    if read_head(client, f"{base}_meta") is None:
        raise KBNotFound(f"no knowledge base {settings.kb!r} in Milvus at {milvus_uri(settings)}")
    for name in (f"{base}_chunks", f"{base}_meta"):
        if client.has_collection(name):
            client.drop_collection(name)


class LazyDocuments(Mapping):
    """The documents of a Milvus knowledge base, read on demand (`store`: a MilvusStore; its `document`,
    `document_ids` and manifest counts)."""

    def __init__(self, store) -> None:
        self.store = store

    def __getitem__(self, doc_id: str) -> DocRecord:
        record = self.store.document(doc_id)
        if record is None:
            raise KeyError(doc_id)
        return record

    def __iter__(self) -> Iterator[str]:
        return self.store.document_ids()

    def __len__(self) -> int:
        return int(self.store.manifest.counts.get("documents", 0))
