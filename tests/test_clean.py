"""clean(): normalization, inline HTML, each furniture rule, and the real llm-notes-zh corpus."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ingest.clean import clean, is_toc_like
from rag.text import strip_all_space

CORPUS = Path("/work/shared/corpus/llm-notes-zh")
DEV_QA = Path(__file__).resolve().parents[1] / "data" / "qa" / "llm-notes-zh.dev.jsonl"
KANGXI = re.compile("[\u2f00-\u2fdf]")


@pytest.fixture(scope="module")
def real() -> dict[str, str]:
    """File name -> raw text of the five scraped notes."""
    files = sorted(CORPUS.glob("*.txt")) if CORPUS.is_dir() else []
    if not files:
        pytest.skip(f"real corpus not found at {CORPUS} (shared checkout absent); real-corpus checks skipped")
    return {f.name: f.read_text(encoding="utf-8") for f in files}


def _file(real: dict[str, str], prefix: str) -> str:
    return next(text for name, text in real.items() if name.startswith(prefix))


# --------------------------------------------------------------------------- real corpus


def test_no_kangxi_radicals_after_clean(real) -> None:
    assert any(KANGXI.search(text) for text in real.values()), "corpus no longer has look-alikes to fold"
    for name, text in real.items():
        assert not KANGXI.search(clean(text).text), name


def test_removed_share_on_real_files(real) -> None:
    results = {name: clean(text) for name, text in real.items()}
    assert any(c.removed_share > 0 for c in results.values())
    for name, c in results.items():
        assert c.removed_share < 0.5, (name, c.rules)
        # Beyond inline-HTML markup and a trailing related-articles list, furniture stays under 30%.
        rest = c.removed_chars - c.rules.get("html", 0) - c.rules["related"]
        assert rest < 0.30 * c.original_chars, (name, c.rules)


def test_real_files_keep_every_dev_evidence_span(real) -> None:
    if not DEV_QA.is_file():
        pytest.skip(f"{DEV_QA} not found")
    cleaned = [strip_all_space(clean(text).text) for text in real.values()]
    for line in DEV_QA.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        for evidence in row["evidence"]:
            assert any(strip_all_space(evidence) in text for text in cleaned), (row["id"], evidence)


def test_real_furniture_is_gone(real) -> None:
    texts = {name: clean(text).text for name, text in real.items()}
    joined = "\n".join(texts.values())
    for junk in ("在这里插入图片描述", "添加红包", "扫码支付", "一键收藏", "相关文章", "本帖最后由", "<strong>",
                 "如若转载", "对你有帮助么"):
        assert junk not in joined, junk
    assert "<s>[INST] <<SYS>>" in _file(texts, "000")  # a prompt template is not HTML
    assert "## 二、Transformer结构" in _file(texts, "001")  # bold-only HTML line became a heading


def test_toc_block_from_real_file(real) -> None:
    text = _file(real, "003")
    start = text.index("目录")
    toc = text[start : start + 1500]
    assert is_toc_like(toc)
    prose = text[text.index("ALiBi的思路是"):][:600]
    assert not is_toc_like(prose)


# --------------------------------------------------------------------------- normalization and HTML


def test_nbsp_zero_width_and_fullwidth_folded() -> None:
    out = clean("a\u00a0b\u200bc\u3000d \uff21\u2f24").text
    assert out == "a bc d A大"


def test_inline_html_converted() -> None:
    raw = ("<p><strong><span style=\"font-size:22px;\">一、概述</span></strong><br />\n"
           "正文 <strong>加粗</strong> 内容&amp;更多</p>\n<h3>小节</h3><ul><li>甲</li><li>乙</li></ul>"
           "<p>公式 <img alt=\"x^2\" src=\"https://e.com/a.gif\" /> 结束</p>")
    out = clean(raw).text
    assert out == "## 一、概述\n正文 加粗 内容&更多\n\n### 小节\n\n- 甲\n- 乙\n\n公式 x^2 结束"


def test_text_with_angle_brackets_is_not_html() -> None:
    raw = "<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST]\nif a < b and c > d: pass"
    assert clean(raw).text == raw


def test_whitespace_rules() -> None:
    raw = "title   with  spaces   \n\n\n\n\n  indented  item\n```\ncode   keeps   spaces\n```\n"
    assert clean(raw).text == "title with spaces\n\n  indented item\n```\ncode   keeps   spaces\n```"


# --------------------------------------------------------------------------- furniture rules

BODY = "注意力机制让模型从大量信息中筛选出少量重要信息,并聚焦到这些重要信息上。"


@pytest.mark.parametrize(
    ("rule", "junk"),
    [
        pytest.param("image_placeholders", "在这里插入图片描述", id="image-csdn-placeholder"),
        pytest.param("image_placeholders", "![](https://x.com/a.png)", id="image-markdown-alt-only"),
        pytest.param("image_placeholders", "[image]", id="image-bracket"),
        pytest.param("image_placeholders", "4fcfe13decdb3f3ae55463a8634c28ba.png", id="image-file-name"),
        pytest.param("image_placeholders", "💡", id="icon-only"),
        pytest.param("counters", "点赞 12 收藏 3 分享", id="counter-row"),
        pytest.param("counters", "阅读量1.2k", id="view-count"),
        pytest.param("counters", "  • 15\n    点赞\n  • 16\n    收藏\n  • 0\n    评论", id="counter-list"),
        pytest.param("tipping", "打赏作者\nmossfan\n你的鼓励将是我创作的最大动力\n¥1 ¥2 ¥4 ¥6\n扫码支付:¥1\n获取中\n扫码支付",
                     id="tipping-block"),
        pytest.param("tipping", "添加红包\n请填写红包祝福语或标题\n红包个数最小为10个\n红包金额最低5元", id="red-packet-block"),
        pytest.param("related", "推荐阅读\n\nBM25 原理详解\n\nFAISS 入门\n\n一文看懂 RRF 融合…", id="related-list"),
        pytest.param("related", "相关文章:\n\nC# 反射详解\n反射是C#中的一个强大特性,允许程序在运行时检查…...\n跳表(Skip List)\n"
                     "跳表是一种概率型数据结构…", id="related-with-teasers"),
        pytest.param("copyright", "版权声明:本文为博主原创文章,遵循 CC 4.0 BY-SA 版权协议,转载请附上原文出处链接和本声明。",
                     id="copyright-csdn"),
        pytest.param("copyright", "本文链接:https://blog.example.com/p/1", id="permalink"),
        pytest.param("copyright", "如若转载,请注明出处:http://www.example.com/news/1.html", id="reprint"),
        pytest.param("prompts", "关注博主即可阅读全文", id="follow-prompt"),
        pytest.param("prompts", "登录后复制", id="login-copy"),
        pytest.param("prompts", "展开阅读全文", id="expand"),
        pytest.param("prompts", "“相关推荐”对你有帮助么?\n  • 非常没帮助\n  • 一般\n  • 有帮助\n提交", id="helpful-poll"),
        pytest.param("forum", "页:\n[1]", id="pager"),
    ],
)
def test_rule_removes_furniture(rule: str, junk: str) -> None:
    result = clean(f"{BODY}\n\n{junk}\n\n{BODY}")
    assert result.text == f"{BODY}\n\n{BODY}", result.text
    assert result.rules[rule] > 0 and result.removed_chars > 0 and 0 < result.removed_share < 1


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("春节抢红包的二倍均值算法,保证每个人抢到的红包金额期望相同,总和等于红包总额。", id="red-packet-sentence"),
        pytest.param("抢红包系统设计\n\n核心是把红包金额预先拆分好放进队列,每次抢红包就是一次出队操作,避免并发超发。",
                     id="red-packet-heading-and-prose"),
        pytest.param("例如一张图片中,人对不同区域的关注度,有的地方高,有的地方低。", id="image-word-in-prose"),
        pytest.param("评论区里有人问:为什么收藏夹里的文章越来越多,却越来越少读?", id="counter-words-in-prose"),
        pytest.param("开源许可证规定了版权声明必须随源码一起分发,这是 MIT 协议唯一的要求。", id="copyright-word-in-prose"),
        pytest.param("相关推荐\n\n推荐系统的核心在于把用户对商品的评分矩阵分解成低维的隐向量,再用向量内积预测评分,"
                     "这种方法在稀疏数据上表现稳定。", id="related-heading-before-prose"),
        pytest.param("我们进入 Kubernetes 集群后,先检查节点状态。", id="join-group-lookalike"),
        pytest.param("1. 问题\n2. 提示词\n3. 模型用于区分输入和输出结束的符号", id="short-numbered-list"),
    ],
)
def test_rule_keeps_content(content: str) -> None:
    result = clean(f"{BODY}\n\n{content}")
    assert result.text == f"{BODY}\n\n{content}", result.rules


# --------------------------------------------------------------------------- TOC heuristic


def test_is_toc_like_synthetic() -> None:
    toc = "目录\n\n- [大模型基础](#a)\n- [大模型进阶](#b)\n- [微调](#c)\n- [推理](#d)"
    assert is_toc_like(toc)
    assert is_toc_like("1. 简介 ........ 1\n2. 安装 ........ 3\n3. 使用 ........ 7\n4. 常见问题 ........ 12")
    assert not is_toc_like(BODY * 3)
    assert not is_toc_like("1. 问题\n2. 提示词\n3. 结束符")  # too short to tell


def test_cleaned_record() -> None:
    result = clean("")
    assert result.text == "" and result.removed_share == 0.0 and result.original_chars == 0
