"""Ingest through both backends alike (incremental, deletes, --rebuild), and Milvus crash safety:
a write stopped at any point (simulated, and by kill -9) leaves the old or the new knowledge base."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ingest.pipeline import run_ingest
from rag import store
from rag.retrieve import open_retriever
from rag.settings import Settings
from rag.stores import milvus
from rag.text import tokenize
from tests.test_ingest_pipeline import killed_runs

ROOT = Path(__file__).resolve().parents[1]
LORA_ONLY = "低秩分解矩阵"  # a phrase only lora.md holds
FILES = {
    "lora.md": "# LoRA\n\nLoRA 冻结预训练权重，只训练低秩分解矩阵 A 和 B，显著减少可训练参数。\n",
    "kv.txt": "KV Cache 缓存每一层注意力的 key 和 value，避免重复计算，代价是显存占用随序列长度增长。\n",
    "rope.md": "# RoPE\n\n旋转位置编码把位置信息写进 query 和 key 的旋转角度里，外推时需要插值。\n",
}


def _write(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")


def _doc_ids(settings: Settings, query: str) -> set[str]:
    retriever = open_retriever(settings)
    return {h.chunk.doc_id for mode in ("bm25", "dense", "hybrid") for h in retriever.search(query, mode=mode, k=10)}


@pytest.mark.parametrize("backend", ["files", "milvus"])
def test_incremental_delete_and_rebuild_behave_alike(tmp_path, backend):
    docs = tmp_path / "docs"
    _write(docs, FILES)
    settings = Settings(index_dir=tmp_path / "index", kb="t", store=backend, milvus_uri=str(tmp_path / "kb.db"))
    first = run_ingest([docs], settings, progress=False)
    assert first.count("added") == 3 and first.wrote and first.chunks_total == 3
    assert "docs/lora.md" in _doc_ids(settings, LORA_ONLY)
    again = run_ingest([docs], settings, progress=False)
    assert again.count("unchanged") == 3 and not again.wrote
    (docs / "kv.txt").write_text("KV Cache 用显存换速度：缓存 key/value，生成时每步只算新 token。\n", encoding="utf-8")
    changed = run_ingest([docs], settings, progress=False)
    assert (changed.count("updated"), changed.chunks_embedded) == (1, 1)
    assert "用显存换速度" in open_retriever(settings).search("KV Cache 显存 速度", k=1)[0].chunk.text
    (docs / "lora.md").unlink()
    assert run_ingest([docs], settings, progress=False).count("deleted") == 1
    assert "docs/lora.md" not in _doc_ids(settings, LORA_ONLY)
    assert run_ingest([], settings, deletes=[docs / "kv.txt"], progress=False).count("deleted") == 1
    kb = store.open_store(settings)
    assert sorted(kb.documents) == ["docs/rope.md"] and len(kb) == 1 and list(kb.manifest.files) == [
        str((docs / "rope.md").resolve())]
    rebuilt = run_ingest([docs], settings, rebuild=True, progress=False)
    assert rebuilt.count("added") == 2 and rebuilt.chunks_total == 2
    assert store.open_store(settings).manifest.version == 1
    assert "docs/lora.md" not in _doc_ids(settings, LORA_ONLY)


@pytest.fixture
def milvus_kb(tmp_path):
    """A Milvus Lite knowledge base of FILES, ingested for real."""
    docs = tmp_path / "docs"
    _write(docs, FILES)
    settings = Settings(index_dir=tmp_path / "index", kb="crash", store="milvus", milvus_uri=str(tmp_path / "kb.db"))
    run_ingest([docs], settings, progress=False)
    return settings


def _invariants(kb: milvus.MilvusStore) -> None:
    """What a reader must always see: rows, BM25 rows and manifest agree; every chunk belongs to a
    document the manifest lists; documents and manifest agree."""
    rows = kb._live_rows(None, ["chunk_id"])
    listed = {d for entry in kb.manifest.files.values() for d in entry["doc_ids"]}
    assert len(rows) == len(kb) == kb.terms.n_docs == kb.manifest.counts["chunks"]
    assert {r["doc_id"] for r in rows} == listed == set(kb.documents)
    assert len({r["chunk_id"] for r in rows}) == len(rows)


def test_write_stopped_before_its_commit_is_invisible_and_repaired(milvus_kb):
    kb = store.open_store(milvus_kb)
    before = kb.manifest
    # a writer that inserted its rows and blobs for version 2, then died before the head moved
    g = kb.head.version + 1
    vec = np.ones(kb.manifest.embedder.dim, np.float32) / np.sqrt(kb.manifest.embedder.dim)
    terms = kb.terms.copy()
    counts = terms.add([tokenize("幽灵文档 不应出现")])
    from rag.records import Chunk

    kb._insert_chunks([(Chunk("ghost", "docs/ghost.md", "幽灵文档 不应出现", "/ghost.md"), vec, 1.0, counts[0])], terms, g)
    kb._put_blob("manifest", json.dumps({"broken": True}), g)
    reader = store.open_store(milvus_kb)
    assert reader.manifest == before and reader.search_sparse(tokenize("幽灵文档"), 5) == []
    _invariants(reader)
    # the next write removes the leftovers first
    reader.apply(store.Batch(), set(), reader.manifest)
    assert kb._count(kb.chunks_name, f"version > {reader.head.version}") == 0
    assert kb._count(kb.chunks_name, 'chunk_id == "ghost"') == 0
    _invariants(store.open_store(milvus_kb))


def test_write_stopped_after_its_commit_hides_stale_rows_until_collected(milvus_kb):
    kb = store.open_store(milvus_kb)
    lora = next(d for d in kb.documents if d.endswith("lora.md"))
    kb._collect = lambda: None  # the writer dies right after the commit, before deleting stale rows
    files = {s: e for s, e in kb.manifest.files.items() if lora not in e["doc_ids"]}
    kb.apply(store.Batch(), {lora}, store.Manifest(**{**vars(kb.manifest), "files": files}))
    reader = store.open_store(milvus_kb)
    assert reader.head.pending_chunks == (lora,)
    assert kb._count(kb.chunks_name, f'doc_id == "{lora}"') == 1  # still stored ...
    assert not any(h.chunk.doc_id == lora for h in open_retriever(milvus_kb).search(LORA_ONLY, mode="bm25", k=10))
    _invariants(reader)  # ... but invisible
    reader.apply(store.Batch(), set(), reader.manifest)  # the repair collects it
    assert kb._count(kb.chunks_name, f'doc_id == "{lora}"') == 0
    _invariants(store.open_store(milvus_kb))


def test_killed_milvus_ingest_leaves_old_or_new(tmp_path):
    docs = tmp_path / "docs"
    _write(docs, {f"doc{i}.md": f"# 文档 {i}\n\n第 {i} 篇文档，关于注意力机制与位置编码的笔记。\n" * 30 for i in range(8)})
    uri = str(tmp_path / "crash.db")
    settings = Settings(index_dir=tmp_path / "index", kb="crash", store="milvus", milvus_uri=uri)
    cmd = [sys.executable, "-m", "ingest", str(docs), "--index-dir", str(tmp_path / "index"), "--kb", "crash", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAG_STORE": "milvus", "RAG_MILVUS_URI": uri}
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, capture_output=True)
    n_docs = len(store.open_store(settings).documents)
    milvus.disconnect(settings)
    for _ in killed_runs(cmd, env, docs, (3.0, 6.0, 9.0, 12.0)):
        kb = store.open_store(settings)  # the old or the new version, never a mix
        _invariants(kb)
        assert len(kb.documents) == n_docs
        milvus.disconnect(settings)
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    kb = store.open_store(settings)
    _invariants(kb)
    assert kb._count(kb.chunks_name, f"version > {kb.head.version}") == 0 and not kb.head.pending_chunks
    milvus.disconnect(settings)
