"""The English-to-Chinese lexicon (CC-CEDICT from the pinned wheel, plus the glossary) and what the citation
step does with it: an English sentence moves to the Chinese source whose words it translates, and a
translation that shares almost no words with its cited source is not supported by the cosine alone."""

from __future__ import annotations

import pytest

from rag import lexicon
from rag.attribute import TRANSLATED_MARGIN, attribute_citations
from rag.cite import COSINE_THRESHOLD, TRANSLATED_FLOOR, support_check
from rag.models import ModelIntegrityError
from rag.prompt import Source
from rag.records import Chunk

QUANTIZED = "量化是一种将浮点数参数转换为固定位数的整数或更简单表示的方法,可以显著减少模型的存储需求。"
QLORA = "QLoRA(Quantized Low-Rank Adaptation)是一种结合了量化和低秩适应的方法,用于进一步减少大规模语言模型的计算和存储开销。"
CLAIM = "Quantization means converting floating-point parameters to fixed-width integers or simpler representations."


def source(n: int, text: str) -> Source:
    chunk = Chunk(id=f"c{n}", doc_id=f"d{n}.md", text=text, source=f"/data/d{n}.md", start=0, end=len(text))
    return Source(n, (chunk,), f"d{n}.md", "", text, n)


def test_the_wheel_file_is_pinned(monkeypatch):
    assert lexicon.data_path().name == "cedict_1_0_ts_utf-8_mdbg.txt.gz"
    monkeypatch.setattr(lexicon, "DATA_SHA256", "0" * 64)
    with pytest.raises(ModelIntegrityError, match="sha256"):
        lexicon.data_path()


def test_entries_come_from_the_dictionary_and_the_glossary():
    words = lexicon.lexicon()
    assert {"学习", "学会"} <= words["learn"]  # CC-CEDICT: 学习 /to learn/to study/
    assert "自回归" in words["autoregress"]  # rag/glossary.tsv: a term CC-CEDICT lacks
    assert not any(len(w) == 1 for ws in words.values() for w in ws)


def test_translated_overlap_tells_the_restating_source_apart():
    said, other = lexicon.translated_overlap(CLAIM, QUANTIZED), lexicon.translated_overlap(CLAIM, QLORA)
    assert said - other >= TRANSLATED_MARGIN
    assert lexicon.translated_overlap("The weekly meeting is held every Friday.", QUANTIZED) == 0.0
    assert lexicon.translated_overlap("is it?", QUANTIZED) is None  # no content words


def test_an_english_sentence_moves_to_the_source_it_translates(sample_retriever):
    embed = sample_retriever.embedder.encode_queries
    sources = [source(1, QLORA), source(2, QUANTIZED)]
    text, changed = attribute_citations(CLAIM + "[1]", sources, embed=embed)
    assert (text, changed) == (CLAIM + "[2]", 1)
    # Written without a marker (the model often drops it), a sentence gets the source it translates, not the
    # one with the highest cosine (dev zh-037: 0.839 for [2], which shares "Supervised Fine-Tuning" with it).
    supervised = "Fine-tuning is a supervised learning process according to the notes."
    notes = [source(1, "• 微调数据:不同于大模型预训练过程可以代入无标签样本,深度学习模型微调过程需要代入有标签的样本来进行训练,"
                       "微调的本质是一个有监督学习过程;\n  • 有监督微调:supervised fine-tuning,简称SFT;"),
             source(2, "SFT(监督微调,Supervised Fine-Tuning) … 当前SFT的几种方式如下:")]
    assert attribute_citations(supervised, notes, embed=embed) == (supervised + "[1]", 1)
    # a Chinese sentence is judged by its own words, not moved by the lexicon
    same = "QLoRA结合了量化和低秩适应。[1]"
    assert attribute_citations(same, sources, embed=embed) == (same, 0)


def test_a_translation_without_shared_words_needs_more_than_the_cosine(sample_retriever):
    embed = sample_retriever.embedder.encode_queries
    invented = "Quantized models run faster on mobile phones and need special hardware.[1]"
    (result,) = support_check(invented, [source(1, QUANTIZED)], embed=embed)
    assert result.cosine >= COSINE_THRESHOLD  # the cosine alone would pass it
    assert lexicon.translated_overlap(invented, QUANTIZED) < TRANSLATED_FLOOR
    assert result.status == "unsupported"
    (kept,) = support_check(CLAIM + "[1]", [source(1, QUANTIZED)], embed=embed)
    assert kept.status == "supported"
