"""Citation parsing, sentence support and refusal detection on crafted answers."""

from __future__ import annotations

import pytest

from rag.attribute import attribute_citations
from rag.cite import (
    COSINE_THRESHOLD,
    marker_numbers,
    parse_citations,
    split_sentences,
    statements,
    support_check,
)
from rag.facts import compared_subjects
from rag.prompt import Source
from rag.records import Chunk
from rag.refusal import detect_refusal

LORA = "LoRA 在原模型旁边加入低秩矩阵 A 和 B，训练时冻结原模型权重，只更新这两个小矩阵，显存占用大幅下降。"
GQA = "GQA 把查询头分成若干组，每组共享一对键和值，介于 MHA 与 MQA 之间。"
BM25 = "BM25 scores a document by term frequency, inverse document frequency and document length; k1 controls saturation."


def source(n: int, text: str, doc: str = "notes.md", start: int = 0) -> Source:
    chunk = Chunk(id=f"{doc}:{start}", doc_id=doc, text=text, source=f"/data/{doc}",
                  heading_path=("第二章", "微调"), start=start, end=start + len(text))
    return Source(n, (chunk,), doc, chunk.heading, text, n)


SOURCES = [source(1, LORA, "peft.md", 100), source(2, GQA, "attention.md", 40), source(3, BM25, "rag.md")]


@pytest.mark.parametrize(
    ("text", "numbers"),
    [
        pytest.param("答案[1]。", [1], id="single"),
        pytest.param("答案[1, 2]。", [1, 2], id="comma-list"),
        pytest.param("答案[1，2、3]。", [1, 2, 3], id="cjk-separators"),
        pytest.param("答案[1][2]。", [1, 2], id="adjacent"),
        pytest.param("答案【2】。", [2], id="cjk-brackets"),
        pytest.param("答案［3］。", [3], id="fullwidth-brackets"),
        pytest.param("answer [1-3].", [1, 2, 3], id="range"),
        pytest.param("no markers here (1) or [a].", [], id="none"),
    ],
)
def test_marker_forms(text, numbers):
    assert marker_numbers(text) == numbers


def test_parse_maps_numbers_to_source_spans_in_first_use_order():
    citations, removed, cleaned = parse_citations("GQA 分组共享键值【2】。LoRA 冻结权重[1, 2]。", SOURCES)
    assert removed == 0
    assert [c.n for c in citations] == [2, 1]
    lora = citations[1].chunk
    assert (lora.doc_id, lora.heading_path, lora.start, lora.end) == ("peft.md", ("第二章", "微调"), 100,
                                                                      100 + len(LORA))
    assert lora.text == LORA
    assert cleaned == "GQA 分组共享键值[2]。LoRA 冻结权重[1][2]。"


def test_invalid_numbers_are_removed_and_counted():
    citations, removed, cleaned = parse_citations("LoRA 冻结权重 [7]。GQA 分组[2, 9][0]。", SOURCES)
    assert removed == 3
    assert [c.n for c in citations] == [2]
    assert cleaned == "LoRA 冻结权重。GQA 分组[2]。"


def test_merged_source_cites_its_whole_span():
    a = Chunk(id="x:0", doc_id="x", text="甲乙丙丁", source="/d/x", start=0, end=4)
    b = Chunk(id="x:4", doc_id="x", text="戊己", source="/d/x", start=4, end=6)
    merged = Source(1, (a, b), "x", "", "甲乙丙丁戊己", 1)
    (citation,), _, _ = parse_citations("见[1]。", [merged])
    assert (citation.chunk.start, citation.chunk.end, citation.chunk.text) == (0, 6, "甲乙丙丁戊己")


def test_split_sentences_keeps_markers_after_the_stop_with_their_sentence():
    text = "LoRA 冻结原模型。[1] GQA 分组共享键值！[2]\nBM25 uses idf. It is old [3]. Version 2.5 is out."
    assert split_sentences(text) == [
        "LoRA 冻结原模型。[1]", "GQA 分组共享键值！[2]", "BM25 uses idf.", "It is old [3].",
        "Version 2.5 is out.",
    ]


def test_an_english_sentence_ends_before_its_marker():
    assert split_sentences("It normalizes the scores.[2] The sum is one.[1]") == [
        "It normalizes the scores.[2]", "The sum is one.[1]"]


def test_a_sentence_ending_in_a_number_ends_at_its_period():
    assert split_sentences("Its dimension is 1024. It is stored in models/. [2]") == [
        "Its dimension is 1024.", "It is stored in models/. [2]"]
    assert split_sentences("长度归一化。2. b = 0.75：控制强度。") == ["长度归一化。", "2. b = 0.75：控制强度。"]


def test_numbered_list_items_are_not_split_at_the_number():
    assert split_sentences("步骤如下：\n1. 冻结权重[1]\n2. 训练低秩矩阵[1]") == [
        "步骤如下：", "1. 冻结权重[1]", "2. 训练低秩矩阵[1]"
    ]


def test_support_flags_on_crafted_sentences():
    answer = (
        "LoRA 训练时冻结原模型权重，只更新低秩矩阵 A 和 B[1]。"  # faithful paraphrase of [1]
        "GQA 让每组查询头共享键和值[2]。"  # faithful, Chinese bigrams
        "LoRA 可以把推理速度提高十倍并支持图像生成[2]。"  # cites the wrong source, made up
        "这是一种常用的方法。"  # no citation, and no source says it
        "训练时冻结原模型权重。"  # no citation, but [1] says it
        "BM25 uses inverse document frequency and document length [3]. "  # faithful, English
        "BM25 was invented by Google in 2019 for image search [3]."  # made up
    )
    results = support_check(answer, SOURCES)
    assert [r.status for r in results] == [
        "supported", "supported", "unsupported", "unsupported", "uncited", "supported", "unsupported",
    ]
    assert [r.cited for r in results] == [(1,), (2,), (2,), (), (), (3,), (3,)]
    assert all(0.0 <= r.lexical <= 1.0 for r in results)


def test_invalid_citation_counts_as_uncited():
    (result,) = support_check("LoRA 冻结权重[9]。", SOURCES)
    assert result.status == "uncited"


def test_embedding_cosine_rescues_a_translation_not_a_same_language_invention(sample_retriever):
    """The real e5 cosine passes an English sentence that translates its Chinese source; a Chinese
    sentence that only shares the topic of its Chinese source is judged by its words, however close
    the cosine (an invented explanation assembled from a list of headings)."""
    embed = sample_retriever.embedder.encode_queries
    translated = "During training LoRA freezes the original weights and only updates the two small matrices [1]."
    (lexical_only,) = support_check(translated, SOURCES)
    (with_embed,) = support_check(translated, SOURCES, embed=embed)
    assert lexical_only.status == "unsupported" and lexical_only.cosine is None
    assert with_embed.status == "supported" and with_embed.cosine >= COSINE_THRESHOLD

    headings = [source(1, "• [x] Layer Norm 篇\n• [x] RMS Norm 篇 (均方根 Norm)\n• [x] Layer normalization 对比篇")]
    invented = "RMS Norm 在计算梯度时会把每个维度的梯度平方和除以维度大小，从而提高梯度的收敛速度。[1]"
    (result,) = support_check(invented, headings, embed=embed)
    assert result.cosine >= COSINE_THRESHOLD and result.lexical < 0.5
    assert result.status == "unsupported"


def test_a_short_claim_is_judged_by_meaning(sample_retriever):
    """"不会掉点。" has too few characters for overlap to mean anything; its cosine decides."""
    sources = [source(1, "实验表明，合并 LoRA 权重之后模型效果不会下降。")]
    (result,) = support_check("不掉点。[1]", sources, embed=sample_retriever.embedder.encode_queries)
    assert result.lexical < 0.5 and result.status == "supported"


def test_list_numbers_of_packed_pieces_are_no_statements():
    packed = "LoRA 有几个特点。 … 1. 低秩适应:对参数矩阵进行低秩分解。 … 2. 可扩展性:适用于各种模型。"
    assert statements(packed) == "LoRA 有几个特点。\n低秩适应:对参数矩阵进行低秩分解。\n可扩展性:适用于各种模型。"


@pytest.mark.parametrize(
    ("text", "refused"),
    [
        pytest.param("无法回答", True, id="zh-sentinel"),
        pytest.param("无法回答。", True, id="zh-sentinel-stop"),
        pytest.param("NOT_IN_DOCUMENTS", True, id="en-sentinel"),
        pytest.param("抱歉，文档中没有关于这个问题的信息。", True, id="zh-paraphrase"),
        pytest.param("The documents do not contain this information.", True, id="en-paraphrase"),
        pytest.param("I cannot answer from the documents.", True, id="en-cannot"),
        pytest.param("资料中没有提到。", True, id="zh-not-mentioned"),
        pytest.param("不能回答[1]", True, id="zh-sentinel-misspelt"),
        pytest.param("没有检索时大模型不能回答最新的问题[1]。", False, id="zh-cannot-inside-an-answer"),
        pytest.param("", True, id="empty"),
        pytest.param("LoRA 冻结原模型权重[1]。", False, id="real-answer"),
        pytest.param("The encoder does not contain a causal mask [2].", False, id="cited-not-contain"),
        pytest.param("GQA 没有提到的部分由 MQA 补充[2]。" * 6, False, id="long-answer"),
    ],
)
def test_detect_refusal(text, refused):
    assert detect_refusal(text) is refused


# Notes that list questions without answers ("• [x] 3. 涌现能力是啥原因?") back no claim.
TOC = "• [x] 3. 涌现能力是啥原因?\n• [x] 4. 大模型LLM的架构介绍?"


def test_statements_leave_the_questions_out():
    assert statements(TOC) == ""
    assert statements("为什么要用 LoRA？\nLoRA 只训练低秩矩阵。") == "LoRA 只训练低秩矩阵。"


def test_list_numbers_of_a_source_back_no_figure():
    listed = source(1, "LoRA 的优点：\n1. 显存占用低\n5. 训练快", "lora.md")
    [verdict] = support_check("LoRA 的秩一般设成 1 到 5。[1]", [listed])
    assert verdict.status == "unsupported" and set(verdict.missing) == {"1", "5"}


def test_a_sentence_built_on_a_listed_question_is_unsupported():
    toc = source(1, TOC, "toc.md")
    [verdict] = support_check("大模型的涌现能力是啥原因导致的，是架构介绍。[1]", [toc])
    assert verdict.status == "unsupported"


def test_a_question_given_as_the_answer_is_unsupported():
    [verdict] = support_check("LoRA 的低秩矩阵一般设成多少？[1]", SOURCES)
    assert verdict.status == "unsupported" and verdict.missing == ("question",)


def test_a_wrong_marker_moves_to_the_source_that_supports_the_sentence():
    text, changed = attribute_citations("GQA 把查询头分成若干组，每组共享一对键和值。[1]", SOURCES)
    assert changed == 1 and marker_numbers(text) == [2]


def test_a_name_the_question_gives_does_not_stop_a_marker_moving():
    answer, question = "ZhiKu 的 GQA 把查询头分成若干组，每组共享一对键和值。[1]", "ZhiKu 的 GQA 怎么分组？"
    assert attribute_citations(answer, SOURCES)[1] == 0  # no source names ZhiKu
    assert attribute_citations(answer, SOURCES, question=question)[1] == 0  # nor does the question make it so
    titled = [SOURCES[0], source(2, GQA, "ZhiKu 架构说明.md", 40)]  # the document's title names it
    assert marker_numbers(attribute_citations(answer, titled, question=question)[0]) == [2]


def test_an_acronym_is_named_by_the_words_it_stands_for():
    spelled = source(1, "Grouped-query Attention 把查询分成多个组，每组共享一对键值。", "gqa.md")
    [verdict] = support_check("GQA 把查询分成多个组，每组共享一对键值。[1]", [spelled], question="GQA 是怎么做的？")
    assert verdict.status == "supported" and verdict.missing == ()


def test_a_supporting_marker_stays_and_an_unsupported_sentence_keeps_its_own():
    kept = "LoRA 训练时冻结原模型权重，只更新低秩矩阵 A 和 B。[1]"
    assert attribute_citations(kept, SOURCES) == (kept, 0)
    invented = "这个方法最早由 Google 提出。[3]"  # no source names Google: nothing to move it to
    assert attribute_citations(invented, SOURCES) == (invented, 0)


def test_a_co_cited_marker_whose_source_does_not_say_it_is_dropped():
    text, changed = attribute_citations("[1] GQA 把查询头分成若干组，每组共享一对键和值。 [2]", SOURCES)
    assert changed == 1 and marker_numbers(text) == [2]
    both = "LoRA 冻结原模型权重[1]，GQA 让每组查询头共享一对键和值[2]。"  # each source says half: both stay
    assert attribute_citations(both, SOURCES) == (both, 0)


BPE = "子词分词技术，如 BPE，允许模型处理未见过的词汇，通过组合已知的子词单元。"


def test_a_claim_about_the_questions_subject_needs_a_source_that_names_it():
    answer = "SentencePiece 分词的基本思路是通过组合已知的子词单元来处理未见过的词汇。[1]"
    question = "SentencePiece 分词的基本思路是什么？"
    [about_bpe] = support_check(answer, [source(1, BPE, "tokenizer.md")], question=question)
    assert about_bpe.status == "unsupported" and about_bpe.missing == ("sentencepiece",)
    under = Chunk(id="t", doc_id="tokenizer.md", text=BPE, source="", heading_path=("分词", "SentencePiece 篇"))
    [under_heading] = support_check(answer, [Source(1, (under,), "tokenizer.md", under.heading, BPE, 1)],
                                    question=question)
    assert under_heading.status == "supported"  # the heading above the text names the subject
    alibi = source(1, "ALiBi 通过引入线性偏置改进自注意力机制，提高模型在长度外推问题上的性能。", "alibi.md")
    [both] = support_check("RoPE 和 ALiBi 在长度外推问题上的性能更好。[1]", [alibi],
                           question="在长度外推上，RoPE 和 ALiBi 哪个表现更好？")
    assert both.status == "unsupported" and both.missing == ("rope",)  # each of two names must be named


def test_a_mixed_case_acronym_is_named_by_the_words_it_stands_for():
    """"QLoRA在LoRA的基础上又做了什么改进?" (asked in the browser): the QLoRA passage names LoRA only spelled out,
    "QLoRA(Quantized Low-Rank Adaptation)", and the right answer was refused as citing nothing."""
    qlora = source(1, "QLoRA(Quantized Low-Rank Adaptation)具有以下几个特点:\n1. 量化降低存储需求:通过将参数进行量化,"
                      "显著减少模型的存储需求。\n5. 综合优化:QLoRA综合考虑了量化和低秩适应的优势。", "qlora.md")
    question = "QLoRA在LoRA的基础上又做了什么改进?"
    [verdict] = support_check("QLoRA在LoRA的基础上又做了量化降低存储需求和综合优化。[1]", [qlora], question=question)
    assert verdict.status == "supported"
    without = source(1, "QLoRA具有以下几个特点:\n1. 量化降低存储需求:通过将参数进行量化,显著减少模型的存储需求。\n"
                        "5. 综合优化:QLoRA综合考虑了量化和低秩适应的优势。", "qlora.md")
    [verdict] = support_check("QLoRA在LoRA的基础上又做了量化降低存储需求和综合优化。[1]", [without], question=question)
    assert verdict.missing == ("lora",)  # "QLoRA" alone does not name LoRA
    llama = source(1, "This large language model architecture is widely used.", "llm.md")
    [verdict] = support_check("LLaMA is widely used.[1]", [llama], question="Is LLaMA widely used?")
    assert verdict.missing == ("llama",)  # one-letter openings ("L", "La", "M", "A") are too weak to spell it out


def test_an_uncited_claim_needs_its_subject_named_by_a_source_it_draws_on():
    """Uncited, the sentence is judged against all sources together; the subject must still be named where
    its words come from, not only in a table of contents listing "SentencePiece 篇"."""
    answer = "SentencePiece 分词的基本思路是通过组合已知的子词单元来处理未见过的词汇。"
    question = "SentencePiece 分词的基本思路是什么？"
    toc = source(2, "• [x] WordPiece 篇\n• [x] SentencePiece 篇", "toc.md")
    [verdict] = support_check(answer, [source(1, BPE, "tokenizer.md"), toc], question=question)
    assert verdict.status == "unsupported" and verdict.missing == ("sentencepiece",)
    named = source(2, "SentencePiece 把文本当作字符序列，也通过组合已知的子词单元处理未见过的词汇。", "sp.md")
    [verdict] = support_check(answer, [source(1, BPE, "tokenizer.md"), named], question=question)
    assert verdict.status == "uncited"  # drawn on a source that names it: supported together, as before


def test_a_bare_answer_is_about_the_questions_subject():
    """"BPE[1]" to "BERT 用哪种子词切分?" claims BERT uses BPE: its source must name BERT."""
    question = "BERT采用的是哪一种子词(subword)切分方法?"
    [bare] = support_check("BPE[1]", [source(1, BPE, "tokenizer.md")], question=question)
    assert bare.status == "unsupported" and bare.missing == ("bert",)
    named = source(1, "BERT 使用 WordPiece 切分子词，GPT-2 使用 BPE。", "bert.md")
    [bare] = support_check("WordPiece[1]", [named], question=question)
    assert bare.status == "supported"


PREFIX_CAUSAL = ("Prefix LM(前缀语言模型)其实是Encoder-Decoder模型的变体,Encoder部分采用Auto Encoding模式。\n"
                 "Causal LM只涉及到Encoder-Decoder中的Decoder部分,采用Auto Regressive模式,根据历史的token来预测下一个token。\n"
                 "训练过程:Prefix LM在训练时可能会使用到整个序列的信息来预测下一个词,而Causal LM在训练时只能使用到当前词之前的所有词。")


def test_a_copied_sentence_with_another_subject_put_in_is_unsupported():
    """"Prefix LM 和 Causal LM 有什么区别？" (asked in the browser): the 1.5B copied the source's sentence about
    Causal LM with "Prefix LM" put in, and the check tied it to the source, which names Prefix LM elsewhere."""
    question = "Prefix LM 和 Causal LM 有什么区别？"
    swapped, kept, both = support_check(
        "Prefix LM 只涉及到 Encoder-Decoder 中的 Decoder 部分，采用 Auto Regressive 模式，根据历史的 token 来预测下一个 token。[1]"
        "Causal LM 只涉及到 Encoder-Decoder 中的 Decoder 部分，采用 Auto Regressive 模式。[1]"
        "Prefix LM 在训练时可能会使用到整个序列的信息来预测下一个词，而 Causal LM 只能使用到当前词之前的所有词。[1]",
        [source(1, PREFIX_CAUSAL, "llm.md")], question=question)
    assert swapped.status == "unsupported" and swapped.missing == ("prefix lm ≠ causal lm",)
    assert kept.status == "supported" and both.status == "supported"
    packed = PREFIX_CAUSAL.replace("。\n", " … ")  # evidence pieces, joined by gap marks: still one sentence each
    [swapped] = support_check("Prefix LM 只涉及到 Encoder-Decoder 中的 Decoder 部分，采用 Auto Regressive 模式。[1]",
                              [source(1, packed, "llm.md")], question=question)
    assert swapped.missing == ("prefix lm ≠ causal lm",)
    grouped = source(1, "Grouped-query Attention:这种机制将查询分成多个组,每个组内的查询与相应的键值对进行交互。"
                        "这样可以减少计算复杂度,提高效率。\nMulti-query Attention:MQA 让所有的Head之间共享同样的一份 K 和 V 矩阵。")
    mqa, gqa_ = support_check("Multi-query Attention 将查询分成多个组，每个组内的查询与相应的键值对进行交互，从而减少计算复杂度。[1]"
                              "Grouped-query Attention 将查询分成多个组，每个组内的查询与相应的键值对进行交互。[1]", [grouped])
    assert mqa.missing == ("multi-query attention ≠ grouped-query attention",)  # copied from two sentences
    assert gqa_.status == "supported"
    text = "在RM(Reward Modeling)阶段,可以使用更快速的模型训练算法,如快速梯度法等。"
    rm = Source(1, (Chunk("c", "rlhf.md", text, ""),), "RLHF 的 SFT、RM、PPO 三阶段", "", text, 1)
    [glossed] = support_check("在SFT、RM、PPO三阶段流程里,RM阶段可以使用更快速的模型训练算法,如快速梯度法等。[1]", [rm],
                              question="SFT、RM、PPO 三阶段里 RM 阶段怎么加速？")
    assert glossed.status == "supported"  # "Reward Modeling" glosses the answer's own "RM": no name was put in its place
    gqa = source(1, "Grouped-query attention 把查询头分成若干组，每组共享一对键和值。", "gqa.md")
    [spelled] = support_check("GQA 把查询头分成若干组，每组共享一对键和值。[1]", [gqa], question="GQA 是什么？")
    assert spelled.status == "supported"  # an acronym for the words the source spells out is no other subject


VECTORS = ("稀疏向量:稀疏向量是指大部分元素都是零,只有少数几个元素是非零的向量,通常只存储非零元素的位置和值。\n"
           "稠密向量:稠密向量则相反,它包含的元素大部分是非零的,或者非零元素的比例并不低。\n"
           "稠密向量常用于深度学习模型,如词嵌入(Word Embeddings)技术,例如Word2Vec或GloVe。")


def test_the_subjects_a_comparison_question_sets_side_by_side_are_not_swapped():
    """"稀疏向量和稠密向量有什么区别？" (asked with rag.ask): the 1.5B gave each the other's definition, all cited."""
    assert compared_subjects("稀疏向量和稠密向量有什么区别？") == ("稀疏向量", "稠密向量")
    assert compared_subjects("What is the difference between Prefix LM and Causal LM?") == ("Prefix LM", "Causal LM")
    assert compared_subjects("How do LoRA and QLoRA differ?") == ("LoRA", "QLoRA")
    assert compared_subjects("LoRA 的秩一般设多大？") == ()
    question = "稀疏向量和稠密向量有什么区别？"
    contrast, copied, right = support_check(
        "稀疏向量包含的元素大部分是非零的，或者非零元素的比例并不低，而稠密向量常用于深度学习模型。[1]"
        "稀疏向量常用于深度学习模型，如词嵌入技术，例如Word2Vec或GloVe。[1]"
        "稠密向量包含的元素大部分是非零的，或者非零元素的比例并不低。[1]", [source(1, VECTORS, "vectors.md")], question=question)
    assert contrast.missing == ("稀疏向量 ≠ 稠密向量",)  # one side of "…，而…" copies the dense sentence
    assert copied.missing == ("稀疏向量 ≠ 稠密向量",) and right.status == "supported"
    prefix = source(1, "与标准的Encoder-Decoder类似,Prefix LM在Encoder部分采用Auto Encoding模式,即前缀序列中任意两个Token都相互可见。")
    [translated] = support_check("前缀语言模型在Encoder部分采用Auto Encoding模式，即前缀序列中任意两个Token都相互可见。[1]", [prefix],
                                 question="前缀语言模型和因果语言模型有什么区别？")
    assert "前缀语言模型 ≠ prefix lm" not in translated.missing  # a name in the source's other script translates it


def test_names_found_in_the_source_do_not_carry_the_words_between_them():
    """"GLM-130B是由哪家机构发布的?" (streamed by the API): both names are in the source, 由 / 发布 are not."""
    base = source(1, "得到预训练模型,也被称为基座模型。如GLM-130B模型、OpenAI的A、B、C、D四大模型,都是基座模型;")
    invented, said = support_check("GLM-130B是由OpenAI发布的。[1]GLM-130B是基座模型。[1]", [base],
                                   question="GLM-130B是由哪家机构发布的?")
    assert invented.status == "unsupported" and invented.missing == ("words between its names",)
    assert said.status == "supported"


def test_a_subject_named_by_the_title_or_glossed_in_the_question_is_named():
    text = "系统默认使用 bge-m3 模型，向量维度为 1024。"
    titled = Source(1, (Chunk("c", "检索原理.txt", text, ""),), "知库 DocQA 检索原理说明", "", text, 1)
    [verdict] = support_check("知库 DocQA 默认使用 bge-m3 模型，向量维度为 1024。[1]", [titled],
                              question="知库 DocQA 默认用哪个向量模型？")
    assert verdict.status == "supported"
    [glossed] = support_check("训练奖励模型(RM)的数据是成对的偏好比较。[1]",
                              [source(1, "奖励模型的训练数据是成对的偏好比较：同一提示的两个回答。", "rm.md")],
                              question="训练奖励模型(RM)的数据是什么格式？")
    assert glossed.status == "supported"  # the question glosses RM as 奖励模型, which the source names
