"""The Streamlit page through `streamlit.testing.v1.AppTest`, on small real knowledge bases.

The embedded llama.cpp server is started at most once per test process (rag.llm_server shares it),
and only by the test marked `llm`; the others point RAG_LLM_BASE_URL at a closed port.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from rag import store, ui
from rag.records import Chunk, Hit

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
TIMEOUT = 600  # seconds per script run: a real 0.5B generation on a busy 2-core machine
CLOSED_PORT_URL = "http://127.0.0.1:9/v1"

OTHER_DOCS = {
    "sourdough.md": "# Sourdough\n\nA sourdough starter is flour and water fermented by wild yeast.\n\n"
                    "## Baking\n\nBake the loaf at 250 degrees with steam for the first twenty minutes.\n",
    "bicycle.txt": "Bicycle maintenance\n\nLubricate the chain every few hundred kilometres. "
                   "Check tyre pressure weekly; road tyres usually run at six to eight bar.\n",
}
SCRATCH_DOCS = {"alpha.txt": "Alpha notes.\n\nThe alpha team meets on Mondays.\n",
                "beta.txt": "Beta notes.\n\nThe beta team meets on Fridays.\n"}
CHECKLIST_DOCS = {"interview.md": "# 面试题目录\n\n• [x] 1. 涌现能力是啥原因?\n\n• [x] 2. 为什么SFT之后感觉LLM傻了?\n\n"
                                  "# LoRA\n\nLoRA 只训练两个低秩矩阵，原模型权重冻结，所以显存占用大幅下降。\n"}


def _write(folder: Path, docs: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in docs.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory) -> Path:
    """Three real knowledge bases: the sample corpus, unrelated English notes, a scratch KB."""
    from ingest.pipeline import run_ingest
    from rag.settings import Settings

    root = tmp_path_factory.mktemp("app-index")
    docs = tmp_path_factory.mktemp("app-docs")
    sources = {"sample": ROOT / "data" / "sample", "other": _write(docs / "other", OTHER_DOCS),
               "scratch": _write(docs / "scratch", SCRATCH_DOCS), "checklist": _write(docs / "checklist", CHECKLIST_DOCS)}
    for kb, folder in sources.items():
        report = run_ingest([folder], Settings(index_dir=root / "index", kb=kb), progress=False)
        assert report.wrote and not report.failed, report
    return root / "index"


@pytest.fixture
def app_env(index_dir, monkeypatch):
    """Point the page at the test index (sample KB, Chinese UI, no TOML)."""
    monkeypatch.setenv("RAG_INDEX_DIR", str(index_dir))
    monkeypatch.setenv("RAG_KB", "sample")
    monkeypatch.setenv("RAG_UI_LANG", "zh")
    monkeypatch.delenv("RAG_CONFIG", raising=False)
    monkeypatch.delenv("RAG_LLM_BASE_URL", raising=False)
    return monkeypatch


def _run() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _ask(at: AppTest, question: str) -> AppTest:
    at.chat_input[0].set_value(question).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _source_expanders(block) -> list:
    return [e for e in block.expander if e.label.startswith("[") or e.label.startswith(ui.label("closest", "zh"))]


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.sidebar.metric}


# --- the page ---------------------------------------------------------------------------------


@pytest.mark.llm
def test_question_streams_an_answer_with_sources(app_env):
    at = _ask(_run(), "BM25 中的参数 b = 0.75 控制的是什么？")
    assert not at.error, [e.value for e in at.error]
    assert [m.name for m in at.chat_message] == ["user", "assistant"]
    reply = at.chat_message[1]
    text = " ".join([m.value for m in reply.markdown] + [w.value for w in reply.warning])
    assert text.strip()
    assert _source_expanders(reply), "expected a citation or a closest-source expander"
    # each source shows why it ranked and its text (escaped HTML, cited span in <mark>)
    first = _source_expanders(reply)[0]
    assert any("dense" in c.value and "BM25" in c.value for c in first.caption)
    assert any('class="rag-source"' in m.value for m in first.markdown)


def test_refusal_when_nothing_is_retrieved(app_env):
    """BM25 over unrelated English notes finds nothing for a Chinese question: the chain refuses."""
    app_env.setenv("RAG_LLM_BASE_URL", CLOSED_PORT_URL)  # the refusal path never calls the LLM
    at = _run()
    at.sidebar.selectbox(key="kb").set_value("other").run()
    at.radio(key="mode").set_value("bm25").run()
    at = _ask(at, "量子计算机的退相干时间是多少？")
    assert not at.error, [e.value for e in at.error]
    warnings = [w.value for w in at.chat_message[1].warning]
    assert any("文档中没有找到答案" in w and "Not found in the documents" in w for w in warnings), warnings


def test_a_question_the_notes_only_list_is_refused_and_says_why(app_env):
    app_env.setenv("RAG_LLM_BASE_URL", CLOSED_PORT_URL)  # refused before the LLM
    at = _run()
    at.sidebar.selectbox(key="kb").set_value("checklist").run()
    at = _ask(at, "涌现能力的原因是什么？")
    reply = at.chat_message[1]
    assert any("文档中没有找到答案" in w.value for w in reply.warning), [w.value for w in reply.warning]
    assert any(c.value == ui.label("reason_asked_not_answered", "zh") for c in reply.caption)


def test_switching_kb_changes_stats(app_env):
    app_env.setenv("RAG_LLM_BASE_URL", CLOSED_PORT_URL)
    at = _run()
    sample = _metrics(at)
    assert sample["文档"] == "5"
    at.sidebar.selectbox(key="kb").set_value("other").run()
    assert not at.exception
    other = _metrics(at)
    assert other["文档"] == "2" and other["片段"] != sample["片段"]


def test_llm_down_shows_readable_error(app_env):
    app_env.setenv("RAG_LLM_BASE_URL", CLOSED_PORT_URL)
    at = _run()
    assert any("无响应" in c.value for c in at.sidebar.caption)  # health check in the sidebar
    at = _ask(at, "Web 界面的默认端口是多少？")
    assert not at.exception and not at.error
    reply = at.chat_message[1]
    assert any("大模型暂不可用" in i.value for i in reply.info)  # says so, then the evidence sentences answer
    assert any("8501" in m.value and "[" in m.value for m in reply.markdown)
    assert any(e.label.startswith(ui.label("evidence", "zh")) for e in reply.expander)


def test_english_labels(app_env):
    app_env.setenv("RAG_LLM_BASE_URL", CLOSED_PORT_URL)
    app_env.setenv("RAG_UI_LANG", "en")
    at = _run()
    assert at.title[0].value == "Document QA"
    assert set(_metrics(at)) == {"Documents", "Chunks"}


def test_delete_document_updates_stats(app_env):
    app_env.setenv("RAG_LLM_BASE_URL", CLOSED_PORT_URL)
    app_env.setenv("RAG_KB", "scratch")
    at = _run()
    assert _metrics(at)["文档"] == "2"
    delete = [b for b in at.sidebar.button if b.key and b.key.startswith("del:") and b.key.endswith("alpha.txt")]
    delete[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert _metrics(at)["文档"] == "1"
    assert any("alpha.txt" in s.value for s in at.sidebar.success)


def test_new_kb_name_is_validated(app_env):
    app_env.setenv("RAG_LLM_BASE_URL", CLOSED_PORT_URL)
    at = _run()
    create = next(b for b in at.sidebar.button if b.label == "创建")
    at.sidebar.text_input(key="new_kb").input("bad/name")
    create.click().run()
    assert any("knowledge-base name" in e.value for e in at.sidebar.error)
    at.sidebar.text_input(key="new_kb").input("新库")
    next(b for b in at.sidebar.button if b.label == "创建").click().run()
    assert at.sidebar.selectbox(key="kb").value == "新库"
    assert any(i.value == ui.label("kb_empty", "zh") for i in at.sidebar.info)


# --- pure helpers (rag/ui.py) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("report.PDF", "report.pdf", id="suffix-lowercased"),
        pytest.param("../../etc/passwd.txt", "passwd.txt", id="no-path"),
        pytest.param("C:\\Users\\me\\笔记.md", "笔记.md", id="windows-path-cjk-kept"),
        pytest.param("...hidden.md", "hidden.md", id="no-leading-dots"),
        pytest.param("ｆｕｌｌ　ｗｉｄｔｈ.txt", "full width.txt", id="nfkc"),
        pytest.param("a<b>|c?.txt", "a_b__c_.txt", id="odd-chars"),
    ],
)
def test_sanitize_upload_name(raw, expected):
    assert ui.sanitize_upload_name(raw) == expected


def test_sanitize_limits_length_and_keeps_suffix():
    name = ui.sanitize_upload_name("长" * 300 + ".docx")
    assert name.endswith(".docx") and len(name) <= ui.MAX_NAME_CHARS


@pytest.mark.parametrize(
    ("name", "size", "reason"),
    [
        pytest.param("x.exe", 10, "unsupported file type", id="type"),
        pytest.param("x.txt", 3 * 1024 * 1024, "over the 2 MB limit", id="size"),
        pytest.param("x.txt", 0, "empty", id="empty"),
        pytest.param("...", 10, "no usable characters", id="no-name"),
    ],
)
def test_check_upload_rejects(name, size, reason):
    with pytest.raises(ui.UploadRejected, match=reason):
        ui.check_upload(name, size, max_mb=2)


def test_hits_for_merged_span_and_provenance():
    a, b = Chunk("a", "d", "A", "/x/d.md"), Chunk("b", "d", "B", "/x/d.md")
    hits = [Hit(a, 1, 0.91, None, None, fused=0.016), Hit(b, 3, 0.8, 2, 7.5, fused=0.03, rerank=0.5)]
    assert [h.chunk.id for h in ui.hits_for("a+b", hits)] == ["a", "b"]
    assert ui.format_provenance(hits[0]) == "dense #1 (0.910) · BM25 — · fused 0.0160 · rerank —"
    assert "BM25 #2 (7.50)" in ui.format_provenance(hits[1])


def test_answers_never_make_the_browser_fetch_anything():
    text = "见 ![x](http://tracker.example/p.png) 与 ![y][ref]，[文档](http://a.example/b \"t\") <http://c.example> [1]"
    safe = ui.safe_markdown(text)
    assert "![" not in safe and "](" not in safe and "<http" not in safe
    assert "文档" in safe and "[1]" in safe


def test_evidence_pieces_map_into_the_cited_span():
    chunk = Chunk("a", "d", "第一句。第二句。", "s", start=100, end=108)
    assert ui.piece_spans(chunk, [(104, 108), (90, 95)]) == [(4, 8)]


def test_highlight_marks_the_cited_sentence_only():
    text = "安装需要 Python 3.10。Web 界面默认端口 8501（Streamlit）。日志保存在 logs 目录。"
    answer = "Web 界面默认端口是 8501 [1]。"
    spans = ui.highlight_spans(text, ui.citing_sentences(answer, 1))
    assert [text[s:e] for s, e in spans] == ["Web 界面默认端口 8501（Streamlit）。"]
    rendered = ui.highlight_html("<b>" + text, [(s + 3, e + 3) for s, e in spans])
    assert "&lt;b&gt;" in rendered and "<mark>Web 界面默认端口 8501（Streamlit）。</mark>" in rendered
    assert ui.citing_sentences(answer, 2) == []
    assert "\n" not in rendered and "<br>" in ui.highlight_html("# a\n\n1. b", [])


def test_highlight_prefers_the_best_matching_sentence():
    text = ("BM25 的分数由三部分决定：词频（TF）、逆文档频率（IDF）和文档长度归一化。"
            "2. b = 0.75：控制文档长度归一化的强度，取值范围是 0 到 1。")
    spans = ui.highlight_spans(text, ["BM25 中的参数 b = 0.75 控制的是文档长度归一化的强度。[1]"])
    assert [text[s:e] for s, e in spans] == ["2. b = 0.75：控制文档长度归一化的强度，取值范围是 0 到 1。"]


def test_upload_saves_sanitized_files_and_reports_failures(app_env, index_dir):
    app_env.setenv("RAG_LLM_BASE_URL", CLOSED_PORT_URL)
    at = _run()
    at.sidebar.text_input(key="new_kb").input("上传库")
    next(b for b in at.sidebar.button if b.label == "创建").click().run()
    at.file_uploader[0].set_value([
        ("notes.md", "# 值班\n\n值班补贴每次 200 元。\n".encode(), "text/markdown"),
        ("../../etc/evil.txt", b"The evil file is harmless plain text.\n", "text/plain"),
        ("broken.pdf", b"%PDF-1.4 not really a pdf", "application/pdf"),
        ("empty.txt", b"", "text/plain"),
    ])
    at.sidebar.button(key="FormSubmitter:upload-加入知识库").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert _metrics(at)["文档"] == "2"
    folder = store.uploads_dir(index_dir, "上传库")
    assert sorted(p.name for p in folder.iterdir()) == ["evil.txt", "notes.md"]
    errors = " ".join(e.value for e in at.sidebar.error)
    assert "broken.pdf" in errors and "empty.txt" in errors
    assert any("新增 2" in w.value and "失败 1" in w.value for w in at.sidebar.warning)
