"""Evidence selection: sentences cut from the document with exact offsets, packed within the budget."""

from types import SimpleNamespace

from rag import evidence as ev
from rag.llm import estimate_tokens
from rag.records import Chunk, Hit

DOC = ("## 3. 故障等级与响应时间\n\n| 等级 | 定义 | 响应时间 |\n| --- | --- | --- |\n"
       "| P0 | 服务完全不可用 | 15 分钟内 |\n| P1 | 核心功能受损 | 30 分钟内 |\n\n"
       "值班人需保持手机畅通。夜间只处理 P0、P1 级别事件。复盘必须在 2 个工作日内完成。")
DOCS = {"d": SimpleNamespace(text=DOC)}
CHUNK = Chunk("c1", "d", DOC, "/x/d.md", heading_path=("3. 故障等级与响应时间",), start=0, end=len(DOC))


def test_candidates_are_document_slices_without_headings_and_rows_keep_their_header():
    sentences = ev.candidate_sentences([Hit(CHUNK)], DOCS)
    assert all(DOC[s.start:s.end] == s.text for s in sentences)
    texts = [s.text for s in sentences]
    assert not any(t.startswith("#") for t in texts)
    assert "| 等级 | 定义 | 响应时间 |" not in texts  # the header is context, not a candidate
    row = next(s for s in sentences if s.text.startswith("| P0"))
    assert row.header is not None and row.header.text == "| 等级 | 定义 | 响应时间 |"


def test_pack_keeps_the_budget_and_puts_the_header_before_its_row():
    sentences = ev.candidate_sentences([Hit(CHUNK)], DOCS)
    scored = [ev.Sentence(s.doc_id, s.start, s.end, s.text, s.group, s.rank, score=1.0 if "P0 |" in s.text else 0.1,
                          header=s.header) for s in sentences]
    packed = ev.pack(scored, [Hit(CHUNK)], DOCS, budget_tokens=40)
    (source,) = packed.sources
    assert source.text.startswith("| 等级 | 定义 | 响应时间 |\n| P0")  # adjacent in the document: joined as they are
    assert sum(estimate_tokens(DOC[a:b]) + 1 for a, b in source.pieces) <= 40
    assert packed.picked[0].text.startswith("| P0") and source.span.text == DOC


def test_a_picked_sentence_brings_the_sentences_it_hands_over_to():
    """A lead-in brings its first item, and that item the "这…" sentence after it; a sentence that hands over
    to nothing comes alone, and so does one with a heading between it and the next."""
    doc = ("要让大模型输出合规化,可以采取以下方法:\n\n  1. 数据清理和预处理:对输入数据进行清理,以确保数据符合合规要求。"
           "这可能包括去除敏感信息、匿名化处理、数据脱敏等操作。\n\n  2. 引入合规性约束:在训练中约束模型的输出。\n\n"
           "## 监控\n\n持续监控模型的输出。")
    chunk = Chunk("m1", "m", doc, "/x/m.md", heading_path=("监控",), start=0, end=len(doc))
    docs = {"m": SimpleNamespace(text=doc)}
    sentences = ev.candidate_sentences([Hit(chunk)], docs)
    lead, item1, this, item2, monitor = sentences
    assert [f.text for f in ev.followers(lead)] == [item1.text, this.text]  # a chain of at most MAX_FOLLOWERS
    assert ev.followers(this) == [] and ev.followers(item2) == []  # "2. 引入…" then a heading: alone
    scored = [ev.Sentence(s.doc_id, s.start, s.end, s.text, s.group, s.rank, score=1.0 if s is item1 else 0.1,
                          follower=s.follower) for s in sentences]
    budget = estimate_tokens(item1.text) + estimate_tokens(this.text) + 2
    (source,) = ev.pack(scored, [Hit(chunk)], docs, budget_tokens=budget).sources
    assert source.pieces == ((item1.start, item1.end), (this.start, this.end))  # brought along by "1. 数据清理…"
    (alone,) = ev.pack(scored, [Hit(chunk)], docs, budget_tokens=budget, follow=False).sources
    assert (this.start, this.end) not in alone.pieces  # the shorter lead-in, scored as high, took the room
    tight = estimate_tokens(item1.text) + 1  # no room for the follower: the picked sentence still comes
    (source,) = ev.pack(scored, [Hit(chunk)], docs, budget_tokens=tight).sources
    assert source.pieces == ((item1.start, item1.end),)


def test_a_lead_in_reaches_its_list_past_the_summary_a_scrape_put_first():
    """Scraped pages often put a list's closing summary between its lead-in and its items: the lead-in still
    brings the first item (not the summary); another list, or a heading, in between stops it."""
    doc = ("PEFT的关键步骤包括:\n\n通过PEFT,研究人员可以在微调之前预测模型的性能。这样可以加速模型的开发。\n\n"
           "  1. 数据采样:从原始数据集中采样一小部分数据用于性能估计。\n\n  2. 特征提取:使用预训练模型提取特征表示。\n\n"
           "PEFT具有以下几个优点:\n\n  1. 节省时间:不必在全量数据上实验。\n\n"
           "PEFT也存在以下几个缺点:\n\n## 缺点\n\n总之,它有一些缺点。\n\n  1. 精度限制:估计有误差。")
    chunk = Chunk("p1", "p", doc, "/x/p.md", heading_path=("缺点",), start=0, end=len(doc))
    docs = {"p": SimpleNamespace(text=doc)}
    sentences = ev.candidate_sentences([Hit(chunk)], docs)
    by_text = {s.text.strip(): s for s in sentences}
    steps, merits, flaws = by_text["PEFT的关键步骤包括:"], by_text["PEFT具有以下几个优点:"], by_text["PEFT也存在以下几个缺点:"]
    assert [f.text for f in ev.followers(steps)] == ["1. 数据采样:从原始数据集中采样一小部分数据用于性能估计。"]
    assert [f.text for f in ev.followers(merits)] == ["1. 节省时间:不必在全量数据上实验。"]  # the item right after it
    assert ev.followers(flaws) == []  # a heading stands between: its section's list is not this lead-in's


def test_long_lines_are_cut_at_clause_ends():
    text = "，".join(["这是一个没有句号的很长的列表项目"] * 30)
    pieces = ev._split_long(text, 0, len(text))
    assert len(pieces) > 1 and all(b - a <= ev.MAX_SENTENCE_CHARS for a, b in pieces)
    assert "".join(text[a:b] for a, b in pieces).replace("，", "") == text.replace("，", "")


def test_questions_in_the_notes_are_not_evidence_unless_asked_for():
    doc = "• [x] 3. 涌现能力是啥原因?\n• [x] 4. 大模型LLM的架构介绍?\nLoRA 只训练低秩矩阵，显存占用大幅下降。"
    chunk = Chunk("q1", "q", doc, "/x/q.md", start=0, end=len(doc))
    docs = {"q": SimpleNamespace(text=doc)}
    assert [s.text for s in ev.candidate_sentences([Hit(chunk)], docs)] == ["LoRA 只训练低秩矩阵，显存占用大幅下降。"]
    kept = ev.candidate_sentences([Hit(chunk)], docs, questions=True)  # item 4 reads as answered by the next line
    assert [(s.text, s.asks) for s in kept] == [("• [x] 3. 涌现能力是啥原因?", True), ("LoRA 只训练低秩矩阵，显存占用大幅下降。", False)]


def test_a_question_answered_by_the_next_line_is_no_unanswered_question():
    """An FAQ's question is followed by its answer; a checklist's by the next question."""
    doc = ("1. 为什么登录后页面是空白的？\n请清除浏览器缓存后重新登录。\n\n"
           "• [x] 3. 涌现能力是啥原因?\n• [x] 4. 大模型LLM的架构介绍?\n\n# 下一节\n")
    chunk = Chunk("f1", "f", doc, "/x/f.md", start=0, end=len(doc))
    docs = {"f": SimpleNamespace(text=doc)}
    asked = [s.text for s in ev.candidate_sentences([Hit(chunk)], docs, questions=True) if s.asks]
    assert asked == ["• [x] 3. 涌现能力是啥原因?", "• [x] 4. 大模型LLM的架构介绍?"]
    assert "请清除浏览器缓存后重新登录。" in [s.text for s in ev.candidate_sentences([Hit(chunk)], docs)]


def _doc_chunks(doc_id: str, sections: list[tuple[tuple[str, ...], str]]):
    """A document of sections and one chunk per section, with exact offsets."""
    text, chunks = "", []
    for n, (path, body) in enumerate(sections):
        chunks.append(Chunk(f"{doc_id}{n}", doc_id, body, f"/x/{doc_id}", heading_path=path,
                            start=len(text), end=len(text) + len(body)))
        text += body + "\n\n"
    return SimpleNamespace(text=text), chunks


def test_a_sentence_is_read_under_its_section_heading_and_a_title_only_without_sections():
    manual, (intro, section) = _doc_chunks("m", [(("部署手册",), "本手册说明如何部署系统。"),
                                                 (("部署手册", "硬件要求"), "最少 8 GB 内存。")])
    article, (body,) = _doc_chunks("a", [(("王家瑞",), "1995年8月，任市场流通司司长。")])
    sentences = ev.candidate_sentences([Hit(intro), Hit(section), Hit(body)], {"m": manual, "a": article})
    assert {s.text: s.heading for s in sentences} == {
        "本手册说明如何部署系统。": "",  # the title of a manual with sections lifts nothing
        "最少 8 GB 内存。": "硬件要求", "1995年8月，任市场流通司司长。": "王家瑞"}


def test_the_heading_can_make_a_sentence_the_best_evidence(sample_retriever):
    doc, (attention, conv) = _doc_chunks("n", [(("笔记", "自注意力机制的优点"), "可以建立全局的依赖关系，扩大图像的感受野。"),
                                               (("笔记", "卷积网络"), "卷积网络的特点是参数共享，局部连接，计算量小。")])
    question = "自注意力机制有什么优点？"
    scored = ev.score_sentences(question, ev.candidate_sentences([Hit(conv), Hit(attention)], {"n": doc}),
                                sample_retriever.embedder)
    best = max(scored, key=lambda s: s.score)
    assert best.text.startswith("可以建立全局的依赖关系")
    assert best.score > best.cosine + ev.RANK_WEIGHT / best.rank  # the heading raised it
