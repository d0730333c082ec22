"""Knowledge-base folders: plain files, atomic versions, incremental upsert/delete, lock."""

import json

import faiss
import numpy as np
import pytest

from rag import store
from rag.records import Chunk
from rag.text import tokenize

DIM = 8


def _doc(doc_id: str, texts: list[str], rng) -> tuple[store.DocRecord, list[Chunk], np.ndarray, list[list[str]]]:
    body = "\n".join(texts)
    chunks, pos = [], 0
    for i, t in enumerate(texts):
        chunks.append(Chunk(f"{doc_id}-{i}", doc_id, t, f"/src/{doc_id}", ("h",), pos, pos + len(t)))
        pos += len(t) + 1
    vecs = rng.normal(size=(len(texts), DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return store.DocRecord(doc_id, f"/src/{doc_id}", doc_id, body, "sha-" + doc_id), chunks, vecs, [tokenize(t) for t in texts]


def _manifest():
    return {"embedder": {"id": "test", "dim": DIM, "fingerprint": "x"}, "files": {}}


@pytest.fixture
def populated(tmp_path):
    rng = np.random.default_rng(0)
    state = store.empty_state(_manifest(), DIM)
    parts = [_doc("a", ["LoRA 低秩微调", "QLoRA 量化微调"], rng), _doc("b", ["KV Cache 缓存", "RLHF 奖励模型", "位置编码 RoPE"], rng)]
    for doc, chunks, vecs, toks in parts:
        state = state.upsert([doc], chunks, vecs, toks, hnsw_threshold=1000)
    store.write_state(tmp_path, "kb", state)
    return tmp_path, parts


def test_written_kb_is_plain_files_and_loads_back(populated):
    index_dir, parts = populated
    folder = store.kb_path(index_dir, "kb")
    assert folder.is_symlink()
    names = {p.name for p in folder.iterdir()}
    assert {"manifest.json", "chunks.jsonl", "documents.jsonl", "vectors.npy", "dense.faiss", "bm25"} <= names
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["counts"] == {"documents": 2, "chunks": 5}
    state = store.load_state(index_dir, "kb")
    assert [c.id for c in state.chunks] == ["a-0", "a-1", "b-0", "b-1", "b-2"]
    # dense search agrees with brute-force numpy
    q = parts[1][2][1]
    ref = np.argsort(-(np.asarray(state.dense.vectors) @ q))[:3]
    assert [r for r, _ in state.search_dense(q, 3)] == list(ref)


def test_deleted_document_can_no_longer_be_retrieved(populated):
    index_dir, parts = populated
    state = store.load_state(index_dir, "kb").delete({"b"}, hnsw_threshold=1000)
    store.write_state(index_dir, "kb", state)
    state = store.load_state(index_dir, "kb")
    assert {c.doc_id for c in state.chunks} == {"a"}
    assert state.search_sparse(tokenize("KV Cache RLHF"), 10) == []
    b_vec = parts[1][2][0]
    assert all(state.chunks[r].doc_id == "a" for r, _ in state.search_dense(b_vec, 10))
    assert "b" not in state.documents


def test_upsert_replaces_an_updated_document(populated):
    index_dir, _ = populated
    rng = np.random.default_rng(1)
    doc, chunks, vecs, toks = _doc("a", ["全新的内容 Flash Attention"], rng)
    state = store.load_state(index_dir, "kb").upsert([doc], chunks, vecs, toks, hnsw_threshold=1000)
    assert sorted(c.text for c in state.chunks if c.doc_id == "a") == ["全新的内容 Flash Attention"]
    assert len(state.chunks) == 4 and len(state.dense.vectors) == 4 and state.bm25.n_docs == 4


def test_hnsw_above_threshold(populated):
    index_dir, parts = populated
    state = store.load_state(index_dir, "kb")
    doc, chunks, vecs, toks = parts[0]
    state = state.upsert([doc], chunks, vecs, toks, hnsw_threshold=3)
    assert state.dense.kind == "hnsw" and isinstance(state.dense.index, faiss.IndexHNSW)


def test_old_versions_are_pruned_and_stale_temp_ignored(populated):
    index_dir, _ = populated
    versions = index_dir / ".versions" / "kb"
    (versions / ".tmp-00000000000000000001-999999").mkdir()  # a crashed writer's leftovers
    state = store.load_state(index_dir, "kb")
    for _ in range(3):
        store.write_state(index_dir, "kb", state)
    assert len([p for p in versions.iterdir() if not p.name.startswith(".")]) == store.KEEP_VERSIONS
    assert not list(versions.glob(".tmp-*"))
    assert len(store.load_state(index_dir, "kb").chunks) == 5


def test_second_writer_is_locked_out(tmp_path):
    lock = store.kb_lock(tmp_path, "kb")
    try:
        with pytest.raises(store.KBLocked, match="being written"):
            store.kb_lock(tmp_path, "kb")
    finally:
        lock.release()


def test_missing_kb_and_bad_names_are_clear_errors(tmp_path):
    with pytest.raises(store.KBNotFound, match="python -m ingest"):
        store.load_state(tmp_path, "nope")
    with pytest.raises(ValueError, match="knowledge-base name"):
        store.kb_path(tmp_path, "../escape")
