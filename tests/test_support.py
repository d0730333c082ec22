"""The support check: facts that must be in the cited text, and the labelled set it was calibrated on."""

import json
from pathlib import Path

import pytest

from rag.facts import missing_facts, numbers_in, salient_terms

ROOT = Path(__file__).resolve().parents[1]
LABELLED = ROOT / "data" / "qa" / "support.jsonl"


@pytest.mark.parametrize(("text", "numbers"), [
    ("响应时间为 15 分钟，两小时内恢复", {"15", "2"}),
    ("共 8,000 条，10 729 条，1.50 秒", {"8000", "10729", "1.5"}),
    ("少于 10 万个文本块", {"100000"}),
    ("thirty-two layers and four minutes", {"32", "4"}),
    ("BM25 and k1 and GPT-4 are names, not numbers", set()),
])
def test_numbers_are_read_in_every_writing(text, numbers):
    assert numbers_in(text, quantities_only=True) == numbers


def test_grammar_words_are_not_quantities():
    assert numbers_in("一种方法，one of them", quantities_only=True) == set()


def test_named_terms_are_salient_and_common_words_are_not():
    terms = salient_terms("The P0 response uses LoRA, set up by Microsoft; According to notes it works.")
    assert terms == {"P0", "LoRA", "Microsoft"}


@pytest.mark.parametrize(("sentence", "evidence", "missing"), [
    ("QLoRA quantizes weights to 4 bits [1].", "QLoRA 将预训练模型量化为固定位数的整数", ["4"]),
    ("A P0 incident needs a response within 15 minutes [1].", "P0 事故需要在 15 分钟内响应", []),
    ("GQA was proposed by Google [1].", "GQA 将查询头分组，每组共享键和值", ["google"]),
    ("In CPU-only mode it takes 6 seconds [1].", "纯 CPU 模式下耗时约 6 秒", []),
    ("LLM inference is faster with INT8 [1].", "使用 INT8 时大语言模型推理更快", []),  # glossary: llm -> 大语言模型
    ("1. 第一步需要 3 天。[2]", "第一步需要三天。", []),  # list number and marker are no facts
    ("The handover is at 10:00 AM on Monday [1].", "交接时间为每周一上午 10:00", []),  # AM names nothing
    ("The handover is on Friday [1].", "交接时间为每周一上午 10:00", ["friday"]),
    ("LoRA 的秩 r 一般设成 1。[1]", "LoRA 一般选择一些较低的秩，统一设置", ["1"]),  # "一" of "一般" is no 1
    ("1. **Manual Design and Adjustment**: it takes much work [1].", "需要人工设计和调整", []),  # a label names nothing
    ("2. **Cost**: it was trained by Google [1].", "训练代价高昂", ["google"]),
])
def test_missing_facts(sentence, evidence, missing):
    assert missing_facts(sentence, evidence) == missing


@pytest.fixture(scope="module")
def labelled_scores(sample_retriever):
    from rag.eval.support import cosines, evaluate, load_labelled

    rows = load_labelled(LABELLED)
    from rag.cite import COSINE_THRESHOLD

    return rows, evaluate(rows, cosines(rows, sample_retriever.embedder), COSINE_THRESHOLD)


def test_labelled_set_is_real_text():
    rows = [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(rows) >= 80 and len({r["id"] for r in rows}) == len(rows)
    for pair in ("zh-zh", "en-zh", "en-en"):
        labels = [r["label"] for r in rows if r["pair"] == pair]
        assert labels.count("supported") >= 15 and labels.count("unsupported") >= 15, pair
    checked = 0
    for r in rows:  # evidence is copied verbatim from a real document (paths relative to the repository)
        path = ROOT / r["source"]
        if r["source"].startswith("scifact:") or not path.exists():  # ../shared may be absent
            continue
        assert r["evidence"] in path.read_text(encoding="utf-8"), r["id"]
        checked += 1
    assert checked >= 20  # at least the rows from data/sample


def test_check_flags_invented_facts_and_never_a_faithful_translation(labelled_scores):
    rows, (scores, verdicts) = labelled_scores
    assert scores["en-zh"]["false_flags"] == 0  # a correct English sentence citing Chinese text passes
    assert scores["all"]["precision"] >= 0.9 and scores["all"]["recall"] >= 0.7
    invented = [v for v in verdicts if v["kind"] in ("invented_number", "wrong_number")]
    assert sum(v["flagged"] for v in invented) / len(invented) >= 0.9


def test_an_uncited_invented_figure_is_unsupported_and_the_question_is_not_invention():
    from rag.cite import support_check
    from rag.prompt import Source
    from rag.records import Chunk

    text = "AdapterDrop 在训练中以一定的概率随机丢弃适配器层。"
    sources = [Source(1, (Chunk("a", "d", text, "s"),), "d", "", text, 1)]
    (invented,) = support_check("丢弃概率通常取0.1。", sources)
    assert invented.status == "unsupported" and invented.missing == ("0.1",)
    (plain,) = support_check("它会随机丢弃适配器层。", sources)
    assert plain.status == "uncited"
    (repeated,) = support_check("AdapterDrop drops 2 adapter layers at random [1].", sources,
                                question="Does AdapterDrop drop 2 adapter layers?")
    assert repeated.missing == ()  # the figure the question gives; the subject the source names
    (swapped,) = support_check("Llama 2 drops adapter layers at random [1].", sources,
                               question="Does Llama 2 drop adapter layers?")
    assert swapped.missing == ("llama",)  # but not a subject that the source never names
