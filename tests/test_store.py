"""The files backend and store hygiene: plain files, atomic versions, typed manifest, one compatibility
check, row-count checks on load, and a retriever without per-call state."""

import json
import threading
from dataclasses import replace

import numpy as np
import pytest

from rag import store
from rag.records import Chunk
from rag.settings import Settings
from rag.stores import files
from rag.text import tokenize

DIM = 8


def manifest(**changes) -> store.Manifest:
    """A small manifest for a test knowledge base of DIM-dimensional vectors."""
    base = store.Manifest("kb", store.EmbedderInfo("test", DIM, "fp", "query: ", "passage: "), store.Chunking(448, 48),
                          "tok", "2026-01-01", backend="files")
    return replace(base, **changes)


def batch(doc_id: str, texts: list[str], seed: int = 0) -> store.Batch:
    """One document of `texts`, one chunk each, random unit vectors."""
    rng = np.random.default_rng(seed)
    chunks, pos = [], 0
    for i, t in enumerate(texts):
        chunks.append(Chunk(f"{doc_id}-{i}", doc_id, t, f"/src/{doc_id}", ("h",), pos, pos + len(t)))
        pos += len(t) + 1
    vecs = rng.normal(size=(len(texts), DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    doc = store.DocRecord(doc_id, f"/src/{doc_id}", doc_id, "\n".join(texts), "sha-" + doc_id)
    return store.Batch([doc], chunks, vecs, [tokenize(t) for t in texts], [1.0] * len(texts))


@pytest.fixture
def kb(tmp_path):
    settings = Settings(index_dir=tmp_path, kb="kb")
    kb = files.FilesStore.open(settings, create=manifest())
    kb.apply(batch("a", ["LoRA 低秩微调", "QLoRA 量化微调"]), set(), kb.manifest)
    kb.apply(batch("b", ["KV Cache 缓存", "RLHF 奖励模型", "位置编码 RoPE"], seed=1), set(), kb.manifest)
    return settings, kb


def test_written_kb_is_plain_files_and_loads_back(kb):
    settings, _ = kb
    folder = store.kb_path(settings.index_dir, "kb")
    assert folder.is_symlink()
    names = {p.name for p in folder.iterdir()}
    assert {"manifest.json", "chunks.jsonl", "documents.jsonl", "vectors.npy", "dense.faiss", "prior.npy", "bm25"} <= names
    stored = json.loads((folder / "manifest.json").read_text())
    assert stored["counts"] == {"documents": 2, "chunks": 5} and stored["version"] == 2
    assert stored["embedder"]["query_prefix"] == "query: " and stored["format_version"] == store.FORMAT_VERSION
    state = files.load_state(settings.index_dir, "kb")
    assert [c.id for c in state.chunks] == ["a-0", "a-1", "b-0", "b-1", "b-2"]


def test_old_versions_are_pruned_and_stale_temp_ignored(kb):
    settings, _ = kb
    versions = settings.index_dir / ".versions" / "kb"
    (versions / ".tmp-00000000000000000001-999999").mkdir()  # a crashed writer's leftovers
    state = files.load_state(settings.index_dir, "kb")
    for _ in range(3):
        files.write_state(settings.index_dir, "kb", state)
    assert len([p for p in versions.iterdir() if not p.name.startswith(".")]) == files.KEEP_VERSIONS
    assert not list(versions.glob(".tmp-*"))
    assert len(files.load_state(settings.index_dir, "kb").chunks) == 5


@pytest.mark.parametrize("part", ["chunks.jsonl", "prior.npy", "vectors.npy"])
def test_parts_with_different_row_counts_are_refused(kb, part):
    settings, _ = kb
    folder = store.kb_path(settings.index_dir, "kb").resolve()
    if part == "chunks.jsonl":
        lines = (folder / part).read_text(encoding="utf-8").splitlines(keepends=True)
        (folder / part).write_text("".join(lines[:-1]), encoding="utf-8")
    else:
        np.save(folder / part, np.load(folder / part)[:-1], allow_pickle=False)
    with pytest.raises(store.KBCorrupt, match="row counts disagree") as err:
        files.load_state(settings.index_dir, "kb")
    assert str(folder) in str(err.value) and "--rebuild" in str(err.value)


def test_manifest_format_and_fields_are_checked(kb):
    settings, _ = kb
    path = store.kb_path(settings.index_dir, "kb") / "manifest.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "format_version": 1}))
    with pytest.raises(store.IndexMismatch, match="index format 1 is not the supported"):
        store.read_manifest(settings.index_dir, "kb")
    del data["embedder"]["passage_prefix"]
    path.write_text(json.dumps(data))
    with pytest.raises(store.KBCorrupt, match="malformed field"):
        store.read_manifest(settings.index_dir, "kb")


class _Embedder:
    name, dim, fingerprint = "test", DIM, "fp"


@pytest.mark.parametrize(("change", "named"), [
    pytest.param({"embedder": "other"}, "embedder 'test'", id="embedder"),
    pytest.param({"query_prefix": ""}, "query_prefix 'query: '", id="query-prefix"),
    pytest.param({"passage_prefix": "doc: "}, "passage_prefix 'passage: '", id="passage-prefix"),
    pytest.param({"chunk_tokens": 256}, "chunk_tokens 448", id="chunking-for-writers"),
])
def test_one_compatibility_check_names_what_differs(change, named):
    settings = Settings(**{"embedder": "test", **change})
    with pytest.raises(store.IndexMismatch, match=named) as err:
        store.check_compatible(manifest(), settings, _Embedder(), writing=True)
    assert "--rebuild" in str(err.value)
    if "chunk_tokens" in change:  # a reader may use other chunk settings
        store.check_compatible(manifest(), settings, _Embedder())


def test_other_embedder_copy_is_refused():
    other = type("Other", (), {"name": "test", "dim": DIM, "fingerprint": "changed"})()
    with pytest.raises(store.IndexMismatch, match="embedder fingerprint 'fp'"):
        store.check_compatible(manifest(), Settings(embedder="test"), other)


def test_corpus_language_comes_from_the_stored_script_counts():
    zh = {"/a.md": {"script": [300, 120]}, "/b.md": {"script": [10, 500]}}
    assert manifest(files=zh).language == "zh"
    assert manifest(files={**zh, "/c.md": {"script": [0, 900]}}).language == "en"


def test_missing_kb_and_bad_names_are_clear_errors(tmp_path):
    with pytest.raises(store.KBNotFound, match="python -m ingest"):
        files.load_state(tmp_path, "nope")
    with pytest.raises(ValueError, match="knowledge-base name"):
        store.kb_path(tmp_path, "../escape")
    with pytest.raises(ValueError, match="batch rows disagree: 1 chunks, 1 vectors, 0 term lists"):
        store.Batch(chunks=[Chunk("x", "d", "t", "s")], vectors=np.zeros((1, DIM)), priors=[1.0])


def test_second_writer_is_locked_out(tmp_path):
    lock = store.kb_lock(tmp_path, "kb")
    try:
        with pytest.raises(store.KBLocked, match="being written"):
            store.kb_lock(tmp_path, "kb")
    finally:
        lock.release()


def test_retriever_keeps_no_per_call_state(sample_retriever):
    """Threads share one retriever; each gets its own timings, and the retriever is unchanged by searching."""
    before = dict(vars(sample_retriever))
    questions = ["Web 界面的默认端口是多少？", "What is the response time for a P0 incident?", "BM25 的 k1 参数"]
    results: dict[str, object] = {}

    def run(q: str) -> None:
        results[q] = sample_retriever.search_timed(q, mode="hybrid", k=3)

    threads = [threading.Thread(target=run, args=(q,)) for q in questions * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert vars(sample_retriever) == before
    for q in questions:
        result = results[q]
        assert result.hits and result.hits == sample_retriever.search(q, mode="hybrid", k=3)
        assert {"embed", "dense", "bm25", "fuse"} <= set(result.timings_ms) and min(result.timings_ms.values()) >= 0
    assert sample_retriever.search_timed("x", mode="bm25").timings_ms.keys() <= {"bm25", "fuse"}


def test_sample_kb_stores_prior_and_language(sample_retriever):
    """The chunk prior and the corpus language are computed at ingest and read back, not recomputed."""
    from ingest.pipeline import chunk_prior

    kb = sample_retriever.state
    assert kb.manifest.language == "zh" and all("script" in e for e in kb.manifest.files.values())
    priors = kb.priors([c.id for c in kb.state.chunks])
    assert [priors[c.id] for c in kb.state.chunks] == [pytest.approx(chunk_prior(c.text)) for c in kb.state.chunks]
