"""The shipped BM25 scores exactly like rank-bm25's BM25Okapi on the same tokens."""

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from rag.bm25 import BM25Index
from rag.text import tokenize

CORPUS = [
    "LoRA 通过低秩分解来微调大模型，只训练很少的参数。",
    "QLoRA 在 LoRA 的基础上加入了 4-bit 量化，显存占用更低。",
    "KV Cache 缓存了注意力计算中的 key 和 value，加速推理。",
    "RLHF 使用人类反馈训练奖励模型，再用 PPO 优化策略。",
    "Multi-Query Attention shares one key/value head across all query heads.",
    "Grouped-Query Attention (GQA) interpolates between MHA and MQA.",
    "位置编码为 Transformer 提供词序信息，RoPE 是旋转位置编码。",
    "大模型的涌现能力与规模有关。",
    "大模型 大模型 大模型 重复的词会提高词频。",
]
QUERIES = ["LoRA 和 QLoRA 的区别", "kv cache", "what is GQA attention", "大模型 大模型", "不存在 的 词", "RoPE 位置编码"]


@pytest.fixture(scope="module")
def docs():
    return [tokenize(t) for t in CORPUS]


@pytest.mark.parametrize("query", QUERIES)
def test_scores_equal_rank_bm25(docs, query):
    q = tokenize(query)
    np.testing.assert_allclose(BM25Index.from_tokens(docs).scores(q), BM25Okapi(docs).get_scores(q), atol=1e-6)


def test_incremental_update_equals_fresh_build(docs):
    keep = np.array([i % 3 != 0 for i in range(len(docs))])
    updated = BM25Index.from_tokens(docs).subset(keep).appended([docs[0], docs[3]])
    fresh = [d for d, k in zip(docs, keep) if k] + [docs[0], docs[3]]
    for query in QUERIES:
        q = tokenize(query)
        np.testing.assert_allclose(updated.scores(q), BM25Okapi(fresh).get_scores(q), atol=1e-6)


def test_top_k_matches_reference_order(docs):
    q = tokenize("LoRA 微调 量化")
    rows, scores = BM25Index.from_tokens(docs).top_k(q, 3)
    ref = BM25Okapi(docs).get_scores(q)
    matching = [r for r in np.argsort(-ref, kind="stable") if ref[r] > 0]
    assert list(rows) == matching[:3]
    np.testing.assert_allclose(scores, ref[rows], atol=1e-6)


def test_top_k_returns_only_matching_rows(docs):
    rows, _ = BM25Index.from_tokens(docs).top_k(tokenize("RoPE"), 10)
    assert list(rows) == [6]


def test_roundtrip_through_plain_files(tmp_path, docs):
    index = BM25Index.from_tokens(docs)
    index.save(tmp_path)
    loaded = BM25Index.load(tmp_path)
    q = tokenize("注意力 推理 加速")
    np.testing.assert_allclose(loaded.scores(q), index.scores(q), atol=0)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".json", ".npy", ".npy", ".npy", ".npy"]


def test_tokenizer_keeps_terms_whole_and_folds_radicals():
    tokens = tokenize("⼤语⾔模型的KV Cache、kv  cache和LoRA")
    assert "kv cache" in tokens and tokens.count("kv cache") == 2
    assert "lora" in tokens
    assert "大语言模型" in tokens


def test_ties_at_the_cut_are_broken_by_row():
    docs = [["lora"], ["qlora"], ["lora"], ["lora"], ["other"], ["lora"]]
    rows, scores = BM25Index.from_tokens(docs).top_k(["lora"], 2)
    assert list(rows) == [0, 2] and scores[0] == scores[1]


def test_english_words_are_stemmed_and_mixed_tokens_kept():
    assert tokenize("Transformers use attention") == tokenize("transformer using attentions")
    tokens = tokenize("Llama2 的 embeddings 和 KV Cache")
    assert "llama2" in tokens and "embed" in tokens and "kv cache" in tokens
    assert "失效" in tokenize("位置编码会失效")


def test_tokenize_from_many_threads_matches_one_thread():
    from concurrent.futures import ThreadPoolExecutor

    texts = [f"Transformers {i} use attention heads, 大模型的 embeddings 和 generalization" for i in range(400)]
    expected = [tokenize(t) for t in texts]
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(tokenize, texts)) == expected
