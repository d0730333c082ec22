"""The ingest pipeline end to end: incremental, deletions, bad input, crash safety, lock, mismatch."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from ingest.__main__ import main as ingest_main
from ingest.pipeline import run_ingest
from rag import store
from rag.retrieve import open_retriever
from rag.settings import Settings
from rag.stores.files import FilesStore, KBState, load_state, write_state
from rag.text import tokenize

ROOT = Path(__file__).resolve().parents[1]
RADICALS = range(0x2F00, 0x2FE0)


def _write(folder: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))


def _search(settings: Settings, query: str, mode: str = "hybrid", k: int = 5):
    return open_retriever(settings).search(query, mode=mode, k=k)


@pytest.fixture
def corpus(tmp_path):
    docs = tmp_path / "docs"
    _write(docs, {
        "lora.md": "# LoRA\n\nLoRA 冻结预训练权重，只训练低秩分解矩阵 A 和 B，显著减少可训练参数。\n",
        "kv.txt": "KV Cache 缓存每一层注意力的 key 和 value，避免重复计算，代价是显存占用随序列长度增长。\n",
        "radicals.txt": "⼤模型的⻓度外推问题：位置编码在训练⻓度之外会失效。\n",
    })
    return docs, Settings(index_dir=tmp_path / "index", kb="t")


def test_incremental_runs_touch_only_what_changed(corpus):
    docs, settings = corpus
    first = run_ingest([docs], settings, progress=False)
    assert first.count("added") == 3 and first.wrote and first.chunks_embedded == first.chunks_total
    again = run_ingest([docs], settings, progress=False)
    assert again.count("unchanged") == 3 and not again.wrote and again.chunks_embedded == 0
    (docs / "kv.txt").write_text("KV Cache 用显存换速度：缓存 key/value，生成时每步只算新 token。\n", encoding="utf-8")
    changed = run_ingest([docs], settings, progress=False)
    assert (changed.count("updated"), changed.count("unchanged")) == (1, 2)
    assert changed.chunks_embedded == 1
    assert "用显存换速度" in _search(settings, "KV Cache 显存 速度")[0].chunk.text


def test_removed_and_deleted_documents_vanish_from_both_indexes(corpus):
    docs, settings = corpus
    run_ingest([docs], settings, progress=False)
    assert any("低秩" in h.chunk.text for h in _search(settings, "低秩分解矩阵", mode="bm25"))
    (docs / "lora.md").unlink()
    report = run_ingest([docs], settings, progress=False)
    assert report.count("deleted") == 1
    for mode in ("bm25", "dense"):
        assert not any(h.chunk.doc_id.endswith("lora.md") for h in _search(settings, "低秩分解矩阵 LoRA", mode=mode, k=10))
    report = run_ingest([], settings, deletes=[docs / "kv.txt"], progress=False)
    assert report.count("deleted") == 1
    state = load_state(Path(settings.index_dir), settings.kb)
    assert {c.doc_id for c in state.chunks} == {"docs/radicals.txt"}


def test_nfkc_radicals_never_reach_chunks_and_plain_query_finds_them(corpus):
    docs, settings = corpus
    run_ingest([docs], settings, progress=False)
    state = load_state(Path(settings.index_dir), settings.kb)
    assert not any(ord(ch) in RADICALS for c in state.chunks for ch in c.text)
    hits = _search(settings, "大模型的长度外推", mode="bm25")
    assert hits and hits[0].chunk.doc_id == "docs/radicals.txt"


def test_other_embedder_is_refused(corpus):
    docs, settings = corpus
    run_ingest([docs], settings, progress=False)
    other = settings.model_copy(update={"embedder": "sentence-transformers/all-MiniLM-L6-v2"})
    with pytest.raises(store.IndexMismatch, match="embedder"):
        run_ingest([docs], other, progress=False)


def _bad_corpus(root: Path) -> dict[str, str]:
    """Writes the bad-input corpus; returns good file -> a phrase that must be retrievable."""
    deep = "<html><body>" + "<div>" * 3000 + "深层嵌套的 HTML 正文：向量检索" + "</div>" * 3000 + "</body></html>"
    _write(root, {
        "corrupt.pdf": b"%PDF-1.4\n" + os.urandom(2000),
        "empty.txt": b"",
        "binary.txt": os.urandom(4096) + b"\x00" * 512,
        "gbk.txt": "国标编码的中文文本：稀疏向量捕获关键词匹配信息。".encode("gb18030"),
        "deep.html": deep,
        "名字 有 空格.md": "# 标题\n\n文件名带空格和中文字符也要能索引：倒排索引。\n",
        "notes.xyz": "unsupported",
        "ok.md": "# 正常文档\n\n正常的 Markdown 文档：BM25 是稀疏检索。\n",
    })
    with (root / "big.txt").open("wb") as fh:  # 50 MB, over the 20 MB limit
        fh.truncate(50 * 1024 * 1024)
    (root / "loop").mkdir()
    os.symlink(root, root / "loop" / "back")
    return {"gbk.txt": "稀疏向量捕获关键词", "deep.html": "深层嵌套的 HTML 正文", "名字 有 空格.md": "文件名带空格和中文字符", "ok.md": "BM25 是稀疏检索"}


def test_bad_input_is_reported_and_good_files_are_indexed(tmp_path):
    root = tmp_path / "bad"
    good = _bad_corpus(root)
    settings = Settings(index_dir=tmp_path / "index", kb="bad")
    report = run_ingest([root], settings, progress=False)
    failed = {Path(f.source).name: f.reason for f in report.failed}
    for name in ("corrupt.pdf", "empty.txt", "binary.txt", "big.txt", "notes.xyz"):
        assert name in failed and failed[name], f"{name} should be reported with a reason: {failed}"
    assert "too large" in failed["big.txt"]
    assert any("loop" in reason or "loop" in name for name, reason in failed.items()), failed
    assert report.count("added") == len(good)
    for name, phrase in good.items():
        hits = _search(settings, phrase, mode="bm25", k=3)
        assert hits and hits[0].chunk.doc_id.endswith(name), (name, [h.chunk.doc_id for h in hits])


def test_cli_summary_and_exit_codes(tmp_path, capsys):
    docs = tmp_path / "d"
    _write(docs, {"a.md": "# A\n\n向量数据库 FAISS 支持 HNSW 索引。\n", "bad.pdf": b"not a pdf"})
    args = ["--index-dir", str(tmp_path / "ix"), "--kb", "cli", "--quiet"]
    assert ingest_main([str(docs), *args]) == 0
    out = capsys.readouterr().out
    assert "added 1" in out and "failed 1" in out and "bad.pdf" in out and "chunks:" in out
    assert "(embedder bundled:multilingual-e5-small)" in out  # what "auto" chose for a Chinese file
    empty = tmp_path / "e"
    _write(empty, {"z.txt": b""})
    assert ingest_main([str(empty), "--index-dir", str(tmp_path / "ix"), "--kb", "nothing", "--quiet"]) == 1
    lock = store.kb_lock(tmp_path / "ix", "cli")
    try:
        assert ingest_main([str(docs), *args]) == 3
    finally:
        lock.release()


def killed_runs(cmd: list[str], env: dict, docs: Path, delays: tuple[float, ...]) -> Iterator[float]:
    """For each delay: change every file (so the run has real work), start `cmd`, SIGKILL it after the delay."""
    for delay in delays:
        for p in docs.glob("*.md"):
            p.write_text(p.read_text(encoding="utf-8") + f"\n追加 {delay}\n", encoding="utf-8")
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        yield delay


def test_killed_ingest_leaves_previous_index_loadable(tmp_path):
    docs = tmp_path / "docs"
    _write(docs, {f"doc{i}.md": f"# 文档 {i}\n\n第 {i} 篇文档，关于注意力机制与位置编码的笔记。\n" * 20 for i in range(6)})
    index = tmp_path / "index"
    cmd = [sys.executable, "-m", "ingest", str(docs), "--index-dir", str(index), "--kb", "crash", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, capture_output=True)
    before = load_state(index, "crash")
    for _ in killed_runs(cmd, env, docs, (0.5, 2.0, 4.0, 6.0, 8.0)):
        state = load_state(index, "crash")  # always a complete version: old or new
        assert len(state.chunks) == len(state.dense.vectors) == state.bm25.n_docs
        assert len(state.documents) == len(before.documents)
    # and the next run recovers (stale temp folders and the dead writer's lock don't block it)
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, capture_output=True)
    assert not list((index / ".versions" / "crash").glob(".tmp-*"))


def test_index_from_an_older_tokenizer_is_retokenized_without_re_embedding(corpus):
    docs, settings = corpus
    run_ingest([docs], settings, progress=False)
    folder = store.kb_path(Path(settings.index_dir), settings.kb).resolve()
    old = load_state(Path(settings.index_dir), settings.kb)
    stale = KBState(replace(old.manifest, tokenizer="jieba-0.42.1+old"), old.chunks, old.documents, old.dense,
                    old.bm25.from_tokens([c.text.lower().split() for c in old.chunks]), old.prior)
    write_state(Path(settings.index_dir), settings.kb, stale)
    assert store.kb_path(Path(settings.index_dir), settings.kb).resolve() != folder
    as_stored = FilesStore(settings.index_dir, settings.kb, load_state(Path(settings.index_dir), settings.kb),
                           hnsw_threshold=settings.hnsw_threshold)
    assert not as_stored.search_sparse(tokenize("低秩分解矩阵"), 5)  # old terms: today's query tokens miss
    # a reader re-tokenizes in memory, so BM25 matches queries made by today's tokenizer
    hits = open_retriever(settings).search("低秩分解矩阵", mode="bm25")
    assert hits and "低秩" in hits[0].chunk.text
    # the next ingest stores the new terms and embeds nothing
    report = run_ingest([docs], settings, progress=False)
    assert report.wrote and report.chunks_embedded == 0
    from rag.text import TOKENIZER_VERSION
    assert store.read_manifest(Path(settings.index_dir), settings.kb).tokenizer == TOKENIZER_VERSION
