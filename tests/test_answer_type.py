"""The answer-type rule: a year or a quantity in a unit must be in the evidence for such a question."""

import pytest

from rag.answer_type import missing_answer_type


@pytest.mark.parametrize("question, evidence, missing", [
    pytest.param("LoRA 这篇论文是哪一年发表的？", "LoRA 冻结预训练权重，只训练低秩矩阵。", "year", id="zh-year-absent"),
    pytest.param("LoRA 这篇论文是哪一年发表的？", "LoRA 由微软于 2021 年提出。", "", id="zh-year-present"),
    pytest.param("In what year was the Transformer introduced?", "提出于二〇一七年的 Transformer", "", id="en-year-zh-numerals"),
    pytest.param("知库 DocQA 是哪一年开源的？", "最后更新：2026-10-20\n知库 DocQA 是本地文档问答工具。", "year",
                 id="a-revision-date-says-nothing-about-the-question"),
    pytest.param("莎莉公司成立于哪一年？", "莎莉公司总部在芝加哥。它成立于1939年。", "", id="year-with-the-asked-event"),
    pytest.param("全参数微调一个7B模型需要多少GB显存？", "7B 模型有 70 亿参数，全参数微调显存开销很大。", "quantity in GB", id="gb-absent"),
    pytest.param("最少需要多少GB内存？", "内存低于 8 GB 的机器不在支持范围内。", "", id="gb-present"),
    pytest.param("用INT8推理比FP32快几倍？", "INT8 可以在相同内存里存更多数据。", "quantity in 倍", id="times-absent"),
    pytest.param("How many bits does QLoRA quantize weights to?", "QLoRA 使用 4-bit NormalFloat 量化。", "", id="en-hyphen-unit"),
    pytest.param("How many layers does BERT-base have?", "BERT-base 有 12 层 Transformer 编码器。", "", id="en-unit-in-zh"),
    pytest.param("林永康有几个孩子？", "他与妻子育有3名子女。", "", id="count-words-interchangeable"),
    pytest.param("标准多头注意力一般设置几个头？", "多头注意力把向量切成多个子空间。", "quantity in 个", id="count-absent"),
    pytest.param("秩 r 一般设成多少比较合适？", "r 是低秩矩阵的秩。", "", id="no-unit-asked"),
    pytest.param("这款列车被配属予哪几个铁道？", "配属予 JR东日本、JR东海和JR西日本。", "", id="which-ones-is-no-count"),
    pytest.param("What is the difference between MQA and GQA?", "GQA 把查询头分组共享键值头。", "", id="not-a-quantity-question"),
])
def test_missing_answer_type(question, evidence, missing):
    assert missing_answer_type(question, evidence) == missing
