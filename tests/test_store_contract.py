"""One contract, two backends: every test runs on the `files` store and on Milvus Lite.

References are independent of both: numpy brute force for dense search, rank-bm25 for BM25 scores.
"""

from dataclasses import replace

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from rag import store
from rag.records import Chunk
from rag.settings import Settings
from rag.text import tokenize

DIM = 16
BACKENDS = ["files", "milvus"]
TEXTS = {
    "a": ["LoRA 通过低秩分解来微调大模型，只训练很少的参数。", "QLoRA 在 LoRA 的基础上加入了 4-bit 量化，显存占用更低。"],
    "b": ["KV Cache 缓存了注意力计算中的 key 和 value，加速推理。", "RLHF 使用人类反馈训练奖励模型，再用 PPO 优化策略。",
          "Multi-Query Attention shares one key/value head across all query heads."],
    "c": ["Grouped-Query Attention (GQA) interpolates between MHA and MQA.", "位置编码为 Transformer 提供词序信息，RoPE 是旋转位置编码。",
          "大模型的涌现能力与规模有关。", "大模型 大模型 大模型 重复的词会提高词频。"],
}
QUERIES = ["LoRA 和 QLoRA 的区别", "kv cache", "what is GQA attention", "大模型 大模型", "RoPE 位置编码"]


def batch(doc_id: str, texts: list[str], seed: int) -> store.Batch:
    """One document with a chunk per text, seeded unit vectors and a prior that varies by chunk."""
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(len(texts), DIM)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    chunks = [Chunk(f"{doc_id}{i}", doc_id, t, f"/src/{doc_id}.md", ("h", doc_id), i * 100, i * 100 + len(t))
              for i, t in enumerate(texts)]
    doc = store.DocRecord(doc_id, f"/src/{doc_id}.md", doc_id.upper(), "\n".join(texts), f"sha-{doc_id}", {"n": 1})
    return store.Batch([doc], chunks, vecs, [tokenize(t) for t in texts], [1.0 - 0.1 * i for i in range(len(texts))])


def settings_for(backend: str, tmp_path) -> Settings:
    return Settings(index_dir=tmp_path / "index", kb="contract", store=backend, milvus_uri=str(tmp_path / "kb.db"),
                    embedder="test", hnsw_threshold=1000)


def new_manifest(settings: Settings) -> store.Manifest:
    return store.Manifest("contract", store.EmbedderInfo("test", DIM, "fp", "query: ", "passage: "),
                          store.Chunking(448, 48), _tokenizer(), "2026-01-01")


def _tokenizer() -> str:
    from rag.text import TOKENIZER_VERSION

    return TOKENIZER_VERSION


@pytest.fixture(params=BACKENDS)
def kb(request, tmp_path):
    """A store of documents a, b, c written in two batches, then reopened from disk."""
    settings = settings_for(request.param, tmp_path)
    kb = store.open_store(settings, create=new_manifest(settings))
    kb.apply(batch("a", TEXTS["a"], 0), set(), kb.manifest)
    parts = [batch(d, TEXTS[d], i) for i, d in enumerate("bc", start=1)]
    merged = store.Batch([p.docs[0] for p in parts], [c for p in parts for c in p.chunks],
                         np.concatenate([p.vectors for p in parts]), [t for p in parts for t in p.terms],
                         [x for p in parts for x in p.priors])
    kb.apply(merged, set(), kb.manifest)
    return settings, store.open_store(settings)


def _all(texts_by_doc: dict[str, list[str]]) -> tuple[list[str], list[list[str]], np.ndarray]:
    ids, tokens, vecs = [], [], []
    for seed, (doc_id, texts) in enumerate(texts_by_doc.items()):
        b = batch(doc_id, texts, seed)
        ids += [c.id for c in b.chunks]
        tokens += list(b.terms)
        vecs.append(b.vectors)
    return ids, tokens, np.concatenate(vecs)


def test_counts_manifest_and_lookups_survive_reopening(kb):
    settings, kb = kb
    assert len(kb) == 9 and kb.manifest.counts == {"documents": 3, "chunks": 9} and kb.manifest.version == 2
    assert kb.manifest.backend == settings.store and kb.manifest.embedder.dim == DIM
    assert kb.stats()["chunks"] == 9 and kb.stats()["documents"] == 3
    assert [c.text for c in kb.chunks(["c1", "a0"])] == [TEXTS["c"][1], TEXTS["a"][0]]
    assert kb.chunks(["b2"])[0] == batch("b", TEXTS["b"], 1).chunks[2]
    assert kb.priors(["a1", "c3"]) == pytest.approx({"a1": 0.9, "c3": 0.7})
    np.testing.assert_allclose(kb.vectors(["b0", "zz"])["b0"], batch("b", TEXTS["b"], 1).vectors[0], rtol=1e-6)
    assert "zz" not in kb.vectors(["zz"])
    assert kb.documents["c"].title == "C" and kb.documents["c"].meta == {"n": 1} and len(kb.documents) == 3
    assert sorted(kb.documents) == ["a", "b", "c"] and kb.documents.get("nope") is None


def test_dense_search_equals_brute_force(kb):
    _, kb = kb
    ids, _, vecs = _all(TEXTS)
    for q in vecs[[0, 4, 8]]:
        ref = np.argsort(-(vecs @ q), kind="stable")[:5]
        got = kb.search_dense(q, 5)
        assert [i for i, _ in got] == [ids[r] for r in ref]
        np.testing.assert_allclose([s for _, s in got], (vecs @ q)[ref], rtol=1e-5)


@pytest.mark.parametrize("query", QUERIES)
def test_sparse_search_scores_equal_rank_bm25(kb, query):
    _, kb = kb
    ids, tokens, _ = _all(TEXTS)
    ref = BM25Okapi(tokens).get_scores(tokenize(query))
    got = kb.search_sparse(tokenize(query), 9)
    assert got, query
    for chunk_id, score in got:
        assert score == pytest.approx(ref[ids.index(chunk_id)], rel=1e-5)
    assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
    shares = {ids[i] for i, t in enumerate(tokens) if set(t) & set(tokenize(query)) and ref[i] > 0}
    assert {i for i, _ in got} == shares


def test_deleted_document_is_never_returned_and_counts_follow(kb):
    settings, kb = kb
    kb.apply(store.Batch(), {"b"}, kb.manifest)
    for reopened in (kb, store.open_store(settings)):
        assert len(reopened) == 6 and reopened.manifest.counts == {"documents": 2, "chunks": 6}
        assert reopened.search_sparse(tokenize("KV Cache RLHF PPO Multi-Query"), 10) == []
        b_vectors = batch("b", TEXTS["b"], 1).vectors
        assert all(not i.startswith("b") for v in b_vectors for i, _ in reopened.search_dense(v, 10))
        assert "b" not in reopened.documents and sorted(reopened.documents) == ["a", "c"]
        assert reopened.vectors(["b0"]) == {}
    # BM25 statistics follow the removal: scores equal a fresh rank-bm25 over what is left
    ids, tokens, _ = _all({"a": TEXTS["a"], "c": TEXTS["c"]})
    ref = BM25Okapi(tokens).get_scores(tokenize("大模型 位置编码"))
    for chunk_id, score in kb.search_sparse(tokenize("大模型 位置编码"), 10):
        assert score == pytest.approx(ref[ids.index(chunk_id)], rel=0.05)  # avgdl re-weighting tolerance


def test_updated_document_replaces_its_chunks(kb):
    settings, kb = kb
    new = replace(batch("a", ["全新的内容 Flash Attention 分块计算注意力"], 7))
    kb.apply(new, set(), kb.manifest)
    kb = store.open_store(settings)
    assert len(kb) == 8 and [c.text for c in kb.chunks(["a0"])] == ["全新的内容 Flash Attention 分块计算注意力"]
    assert kb.search_sparse(tokenize("QLoRA 量化"), 5) == []
    assert kb.search_sparse(tokenize("Flash Attention"), 1)[0][0] == "a0"
    assert kb.documents["a"].text == "全新的内容 Flash Attention 分块计算注意力"
    assert kb.manifest.version == 3


def test_both_backends_rank_alike(tmp_path):
    """The same writes give the same dense and sparse rankings on both backends."""
    runs = {}
    for backend in BACKENDS:
        settings = settings_for(backend, tmp_path / backend)
        kb = store.open_store(settings, create=new_manifest(settings))
        for seed, (doc_id, texts) in enumerate(TEXTS.items()):
            kb.apply(batch(doc_id, texts, seed), set(), kb.manifest)
        kb.apply(store.Batch(), {"a"}, kb.manifest)
        _, _, vecs = _all(TEXTS)
        runs[backend] = ([kb.search_dense(v, 4) for v in vecs], [kb.search_sparse(tokenize(q), 4) for q in QUERIES])
    (files_dense, files_sparse), (milvus_dense, milvus_sparse) = runs["files"], runs["milvus"]
    for f, m in zip(files_dense + files_sparse, milvus_dense + milvus_sparse):
        assert [i for i, _ in f] == [i for i, _ in m]
        np.testing.assert_allclose([s for _, s in f], [s for _, s in m], rtol=0.05)


def test_missing_kb_is_a_clear_error(tmp_path):
    for backend in BACKENDS:
        settings = settings_for(backend, tmp_path)
        assert store.peek_manifest(settings) is None
        with pytest.raises(store.KBNotFound, match="python -m ingest"):
            store.open_store(settings)


def test_names_and_versions_follow_writes(tmp_path):
    for backend in BACKENDS:
        settings = settings_for(backend, tmp_path / backend)
        assert store.kb_names(settings) == [] and store.kb_version(settings) is None
        kb = store.open_store(settings, create=new_manifest(settings))
        kb.apply(batch("a", TEXTS["a"], 0), set(), kb.manifest)
        first = store.kb_version(settings)
        kb.apply(store.Batch(), {"a"}, kb.manifest)
        assert store.kb_names(settings) == ["contract"] and first and store.kb_version(settings) not in (None, first)
