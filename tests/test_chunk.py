"""Tests for ingest.chunk: sentence splitting, heading paths, atomic blocks, overlap, offsets, ids."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from ingest.chunk import ChunkConfig, chunk_document, chunk_id, split_blocks, split_sentences
from rag.records import Chunk
from rag.text import normalize

CORPUS = Path("/work/shared/corpus/llm-notes-zh")
SMALL = ChunkConfig(chunk_tokens=40, overlap_tokens=8, max_tokens=120)
DEFAULT = ChunkConfig()


def approx(texts: list[str]) -> list[int]:
    """About two characters per embedder token (an injected stand-in for the real counter)."""
    return [max(1, len(t) // 2) for t in texts]


def chunks_of(text: str, config: ChunkConfig = DEFAULT) -> list[Chunk]:
    return chunk_document("doc", "doc.md", text, count_tokens=approx, config=config)


def assert_contract(doc: str, c: Chunk) -> None:
    """chunk.text == prefix + doc[start:end] + suffix, prefix "" or the nearest heading line."""
    body = doc[c.start : c.end]
    assert body.strip() == body and body, c
    at = c.text.rfind(body)
    assert at >= 0, c
    prefix, suffix = c.text[:at], c.text[at + len(body) :]
    if prefix:
        assert prefix.startswith(c.heading_path[-1] + "\n"), c
        extra = prefix[len(c.heading_path[-1]) + 1 :]  # only pieces of an oversized block re-open it
        assert extra == "" or re.fullmatch(r"(```|~~~)\S*\n|\$\$\n|(\|.*\n){1,2}", extra), c
    assert suffix in ("", "\n```", "\n$$"), c


@pytest.fixture(scope="module")
def corpus() -> dict[str, str]:
    if not CORPUS.is_dir():
        pytest.skip(f"real corpus not present at {CORPUS}")
    return {p.name: normalize(p.read_text(encoding="utf-8")) for p in sorted(CORPUS.glob("*.txt"))}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("今天天气很好。我们去公园吧!你去吗?好的;走", ["今天天气很好。", "我们去公园吧!", "你去吗?", "好的;", "走"], id="zh"),
        pytest.param("Pi is 3.14 today. Next one.", ["Pi is 3.14 today.", "Next one."], id="decimal"),
        pytest.param("Use tools, e.g. a hammer. Done!", ["Use tools, e.g. a hammer.", "Done!"], id="eg"),
        pytest.param("He moved to the U.S. in 2020. Then left.", ["He moved to the U.S. in 2020.", "Then left."], id="us"),
        pytest.param("See https://example.com/a.html?x=1 for more. OK", ["See https://example.com/a.html?x=1 for more.", "OK"], id="url"),
        pytest.param(normalize("他说……然后走了。好"), ["他说......", "然后走了。", "好"], id="ellipsis-nfkc"),
        pytest.param("他说…然后走了。", ["他说…", "然后走了。"], id="ellipsis-raw"),
        pytest.param("他说:“我们走吧。”然后离开了。", ["他说:“我们走吧。”", "然后离开了。"], id="zh-quotes"),
        pytest.param('She said "stop." Then ran.', ['She said "stop."', "Then ran."], id="en-quotes"),
        pytest.param("(括号里的话。)后面", ["(括号里的话。)", "后面"], id="brackets"),
        pytest.param("模型用了 BERT. 效果很好。Next step!", ["模型用了 BERT.", "效果很好。", "Next step!"], id="mixed"),
        pytest.param("第一行\n  第二行  \n\n", ["第一行", "第二行"], id="line-breaks"),
        pytest.param("1. 第一步\nStep 2. 然后", ["1. 第一步", "Step 2. 然后"], id="list-numbers"),
        pytest.param("( s 1 , . . . , s n ) 和 (s_1 ,..., s_n)", ["( s 1 , . . . , s n ) 和 (s_1 ,..., s_n)"], id="dots"),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert [text[a:b] for a, b in split_sentences(text)] == expected


def test_split_blocks_kinds() -> None:
    text = "# T\n\npara one.\nstill para.\n\n- a\n- b\n\n| x | y |\n|---|---|\n| 1 | 2 |\n\n```py\nx = 1\n\ny = 2\n```\n\n$$\na+b\n$$\n\nc1\tc2\nd1\td2\n"
    blocks = split_blocks(text)
    assert [b.kind for b in blocks] == ["heading", "paragraph", "list", "table", "code", "formula", "table"]
    assert text[blocks[4].start : blocks[4].end] == "```py\nx = 1\n\ny = 2\n```"
    assert blocks[0].level == 1 and blocks[0].title == "T"


def test_empty_docs() -> None:
    assert chunks_of("") == [] and chunks_of(" \n\t\n ") == []


QA = (
    "面试笔记\n\n"
    + "".join(
        f"{q}\n" + "".join(f"这是第{i}个问题的第{k}句回答,内容足够长以便分块。" for k in range(12)) + "\n\n"
        for i, q in enumerate(["Prefix LM 和 Causal LM区别是什么?", "为什么大模型大多是decoder-only?", "什么是LoRA?"])
    )
)


def test_question_heading_stays_with_answer() -> None:
    chunks = chunks_of(QA, SMALL)
    for q in ["Prefix LM 和 Causal LM区别是什么?", "为什么大模型大多是decoder-only?", "什么是LoRA?"]:
        own = [c for c in chunks if c.heading_path[-1] == q]
        assert len(own) >= 2 and all(c.text.startswith(q + "\n") for c in own[1:])
        assert q in own[0].text.splitlines()[:3]  # first chunk: after any body-less parent heading
        assert QA[own[0].start :].startswith(q) or own[0].start < QA.index(q)
    assert not any(c.text.rstrip().endswith("?") for c in chunks)


def test_markdown_heading_paths() -> None:
    text = "# A\n\nintro 介绍一下。\n\n## B\n\ntext b 内容。\n\n### C\n\ntext c 内容。\n\n## D\n\ntext d 内容。\n"
    paths = {c.text.splitlines()[-1]: c.heading_path for c in chunks_of(text)}
    assert paths["text c 内容。"] == ("A", "B", "C")
    assert paths["text d 内容。"] == ("A", "D")


def test_numbered_plain_headings() -> None:
    body = "正文说明内容,这里有足够多的字来避免与兄弟小节合并。"
    text = (
        f"大语言模型关键技术\n\n一、语言表示方面\n\n1. 词表示\n{body}\n\n2. 分词技术\n{body}\n\n"
        f"(1) 子词\n{body}\n\n二、Transformer结构\n{body}\nStep 1.预训练阶段\n{body}\n"
    )
    paths = [c.heading_path for c in chunks_of(text, SMALL)]
    assert ("大语言模型关键技术", "一、语言表示方面", "1. 词表示") in paths
    assert ("大语言模型关键技术", "一、语言表示方面", "2. 分词技术", "(1) 子词") in paths
    assert ("大语言模型关键技术", "二、Transformer结构", "Step 1.预训练阶段") in paths


def test_toc_list_is_not_glued_to_answers() -> None:
    items = "".join(f"  • [x] {k}. 问题{k}是什么?\n\n" for k in range(30))
    text = f"八股\n\n目录\n\n{items}答案\n\n问题1是什么?\n问题1的答案。\n"
    chunks = chunks_of(text, SMALL)
    assert all("答案。" not in c.text for c in chunks if "[x]" in c.text)
    assert any(c.text.startswith("问题1是什么?\n问题1的答案。") for c in chunks)


LINE = "x = compute_something(alpha, beta)  # 注释\n"
ATOMIC = {
    "code": "```python\n" + LINE * 14 + "```",
    "table": "| 名称 | 说明 |\n|---|---|\n" + "| 模型参数 | 说明文字说明文字说明 |\n" * 20,
    "formula": "$$\n" + "a_{i} + b_{j} = \\sum_k c_{k} \\\\\n" * 18 + "$$",
}


@pytest.mark.parametrize("kind", [pytest.param(k, id=k) for k in ATOMIC])
def test_atomic_blocks_never_split(kind: str) -> None:
    block = ATOMIC[kind].strip()
    assert 200 < approx([block])[0] < 480
    prose = "".join(f"第{k}句普通的说明文字。" for k in range(40))
    text = f"# 标题\n\n{prose}\n\n{block}\n\n{prose}\n"
    chunks = chunks_of(text)
    assert sum(block in c.text for c in chunks) == 1
    for c in chunks:
        assert_contract(text, c)


def test_oversized_code_is_split_on_lines_and_refenced() -> None:
    block = "```python\n" + LINE * 60 + "```"
    text = f"# 代码\n\n{block}\n"
    cfg = ChunkConfig()
    chunks = chunks_of(text, cfg)
    assert len(chunks) > 1
    for c in chunks:
        assert_contract(text, c)
        code = c.text.split("\n", 1)[1] if not c.text.startswith("#") else c.text.split("\n\n", 1)[1]
        assert code.startswith("```python\n") and code.endswith("```")
        assert approx([c.text])[0] <= cfg.max_tokens
    assert "".join(c.text for c in chunks).count(LINE.strip()) == 60


def test_overlap_between_consecutive_chunks() -> None:
    text = "# 长小节\n\n" + "".join(f"这是第{k}句话,用来测试重叠。" for k in range(60)) + "\n"
    chunks = chunks_of(text, SMALL)
    assert len(chunks) > 3
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert b.start < a.end  # bodies share text
        shared = text[b.start : a.end]
        assert shared.startswith("这是第") and shared.endswith("。")  # whole sentences
        assert b.text.startswith("长小节\n")  # continuation repeats the heading


def test_ids_stable_and_content_based() -> None:
    first, second = chunks_of(QA, SMALL), chunks_of(QA, SMALL)
    assert [c.id for c in first] == [c.id for c in second]
    assert all(len(c.id) == 16 and int(c.id, 16) >= 0 for c in first)
    changed = chunks_of(QA.replace("什么是LoRA?", "什么是QLoRA?"), SMALL)
    old, new = {c.id for c in first}, {c.id for c in changed}
    assert old & new and old - new  # unchanged sections keep ids, changed ones get new ids
    assert chunk_id("d", "same", 0) != chunk_id("d", "same", 1) != chunk_id("e", "same", 1)
    repeated = "# 重复\n\n同一段话。\n\n# 重复\n\n同一段话。\n"
    ids = [c.id for c in chunks_of(repeated)]
    assert len(ids) == 2 and len(set(ids)) == 2


def test_real_corpus_contract_sizes_and_speed(corpus: dict[str, str]) -> None:
    cfg = ChunkConfig()
    started = time.perf_counter()
    all_chunks = {name: chunk_document(name, name, text, count_tokens=approx, config=cfg) for name, text in corpus.items()}
    assert time.perf_counter() - started < 2.0
    sizes = []
    for name, chunks in all_chunks.items():
        assert chunks, name
        for c in chunks:
            assert_contract(corpus[name], c)
        sizes += approx([c.text for c in chunks])
    assert max(sizes) <= cfg.max_tokens
    assert sum(s <= cfg.chunk_tokens * 1.3 for s in sizes) >= 0.9 * len(sizes)


def test_real_corpus_question_headings_and_toc(corpus: dict[str, str]) -> None:
    name = next(n for n in corpus if n.startswith("003"))
    chunks = chunk_document(name, name, corpus[name], count_tokens=approx)
    assert all("💡" not in c.text for c in chunks if "[x]" in c.text)  # the TOC stands alone
    questions = [c for c in chunks if c.heading_path and c.heading_path[-1].endswith("?")]
    assert len(questions) > 50
    for c in questions:  # the question opens its chunk: only body-less headings may come before it
        before = c.text[: c.text.index(c.heading_path[-1])]
        assert all(len(line) <= 60 for line in before.splitlines()), c


@pytest.mark.skipif(not os.environ.get("E5_DIR"), reason="E5_DIR (sentence-transformers folder of e5-small) not set")
def test_real_tokenizer_counter(corpus: dict[str, str]) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(os.environ["E5_DIR"])

    def count(texts: list[str]) -> list[int]:
        return [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]

    cfg = ChunkConfig()
    started = time.perf_counter()
    chunks = [c for n, t in corpus.items() for c in chunk_document(n, n, t, count_tokens=count, config=cfg)]
    assert time.perf_counter() - started < 2.0
    sizes = count(["passage: " + c.text for c in chunks])
    assert max(sizes) <= cfg.max_tokens + 8
    assert sum(s <= cfg.chunk_tokens * 1.3 for s in sizes) >= 0.9 * len(sizes)
