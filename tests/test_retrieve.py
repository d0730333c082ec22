"""Hybrid retrieval on a real index: provenance, modes, fusion, cross-lingual, NFKC queries."""

import pytest

from rag import fuse
from rag.retrieve import MODES, with_history


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_finds_the_port(sample_retriever, mode):
    hits = sample_retriever.search("Web 界面的默认端口是多少？", mode=mode, k=5)
    assert hits and any("8501" in h.chunk.text for h in hits[:3])


def test_hits_carry_provenance_of_every_stage(sample_retriever):
    hits = sample_retriever.search("BM25 的 k1 参数是什么意思？", mode="hybrid", k=5)
    top = hits[0]
    assert top.fused is not None and top.fused > 0
    assert top.dense_rank is not None or top.bm25_rank is not None
    both = [h for h in hits if h.dense_rank and h.bm25_rank]
    assert both, "hybrid should surface chunks found by both retrievers"
    assert all(h.dense_score is not None and h.bm25_score is not None for h in both)
    assert [h.fused for h in hits] == sorted((h.fused for h in hits), reverse=True)


def test_english_question_about_chinese_text(sample_retriever):
    hits = sample_retriever.search("What is the response time for a P0 incident?", k=5)
    assert any("P0" in h.chunk.text and "团队规范" in h.chunk.doc_id for h in hits[:3])


def test_radical_lookalikes_in_query_are_folded(sample_retriever):
    plain = sample_retriever.search("部署需要多大内存", mode="bm25", k=3)
    lookalike = sample_retriever.search("部署需要多⼤内存", mode="bm25", k=3)  # U+2F24 for 大
    assert [h.chunk.id for h in plain] == [h.chunk.id for h in lookalike]


def test_empty_query_and_bad_mode(sample_retriever):
    assert sample_retriever.search("   ") == []
    with pytest.raises(ValueError, match="retrieval mode"):
        sample_retriever.search("x", mode="magic")


def test_rrf_and_weighted_fusion_are_pure():
    assert fuse.rrf([[1, 2], [2, 3]], k=1) == {1: 0.5, 2: 0.5 + 1 / 3, 3: 1 / 3}
    fused = fuse.weighted([{1: 10.0, 2: 0.0}, {2: 4.0, 3: 2.0}], [0.5, 0.5])
    assert fused == {1: 0.5, 2: 0.5, 3: 0.0}
    assert fuse.ranked({5: 1.0, 2: 1.0, 7: 2.0}) == [(7, 2.0), (2, 1.0), (5, 1.0)]


def test_follow_up_query_uses_last_user_turn():
    history = [{"role": "user", "content": "什么是LoRA?"}, {"role": "assistant", "content": "低秩微调。"}]
    assert with_history("它的缺点呢?", history) == "什么是LoRA? 它的缺点呢?"
    assert with_history("独立问题", []) == "独立问题"
