"""Answer evaluation: metric aggregation, resumable runs, configs, the report, and one real run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.eval.answers import answer_row, config_settings, config_summary, read_config, run_config, summarize
from rag.eval.qa import QAItem, RelevanceJudge
from rag.eval.report import format_table, write_report
from rag.records import Answer, Chunk, Citation, Hit

ROOT = Path(__file__).resolve().parent.parent


def row(id, *, answerable=True, refused=False, recall=None, f1=None, citations=(), n_sentences=0, unsupported=0,
        removed=0, first_token=None, total=None, usage=None, followup=False) -> dict:
    """A hand-made per-question row in the shape `answer_row` writes."""
    timings = {k: v for k, v in (("first_token", first_token), ("total", total)) if v is not None}
    return {
        "id": id, "question": f"question {id}", "standalone_question": f"question {id}", "answer": f"answer {id}",
        "refused": refused, "answerable": answerable, "followup": followup, "retrieved": [], "first_relevant": None,
        "citations": [{"n": i + 1, "doc_id": "d", "heading": "", "start": 0, "end": 1, "relevant": r, "supported": True}
                      for i, r in enumerate(citations)],
        "removed_citations": removed, "n_sentences": n_sentences, "unsupported_sentences": ["x"] * unsupported,
        "verdicts": {"phrase_recall": recall, "all_phrases": None if recall is None else recall == 1.0, "f1": f1,
                     "refusal_ok": refused != answerable},
        "timings_ms": timings, "usage": usage or {},
    }


ROWS = [
    row("a1", recall=1.0, f1=0.8, citations=[True, False], n_sentences=2, unsupported=1, first_token=100, total=1000,
        usage={"prompt_tokens": 50, "completion_tokens": 10}),
    row("a2", recall=0.5, n_sentences=2, first_token=200, total=2000, followup=True,
        usage={"prompt_tokens": 70, "completion_tokens": 30}),
    row("a3", refused=True, recall=0.0, f1=0.0, first_token=300, total=3000,
        usage={"prompt_tokens": 60, "completion_tokens": 20}),
    row("u1", answerable=False, refused=True, total=500),  # refused before generation: no first token
    row("u2", answerable=False, citations=[None], n_sentences=1, unsupported=1, removed=2, first_token=150, total=1500),
]


def test_summary_metrics_on_hand_made_rows():
    s = summarize(ROWS)
    assert (s["n"], s["n_answerable"], s["n_reference"]) == (5, 3, 2)
    assert s["phrase_recall"] == 0.5  # (1 + 0.5 + 0) / 3; a refusal counts 0
    assert s["all_phrases"] == pytest.approx(1 / 3, abs=1e-4)
    assert s["char_f1"] == 0.4  # mean over the two rows with a reference
    assert s["refusal_accuracy"] == 0.5
    assert s["false_refusal_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert s["cited_share"] == pytest.approx(2 / 3, abs=1e-4)  # of the three non-refused answers
    assert s["citation_precision"] == 0.5  # the unjudgeable citation (relevant None) is left out
    assert s["removed_citations"] == 2
    assert s["unsupported_sentence_share"] == 0.4  # 2 of 5 sentences
    assert (s["first_token_ms_p50"], s["first_token_ms_p95"]) == (175.0, 285.0)
    assert (s["total_ms_p50"], s["total_ms_p95"]) == (1500.0, 2800.0)
    assert (s["prompt_tokens_mean"], s["completion_tokens_mean"]) == (60.0, 20.0)
    assert s["faithfulness"] is None


def test_config_summary_splits_follow_ups_and_unanswerable():
    s = config_summary(ROWS)
    assert s["followup"]["n"] == 1 and s["followup"]["phrase_recall"] == 0.5 and s["followup"]["cited_share"] == 0.0
    assert s["unanswerable"]["n"] == 2 and s["unanswerable"]["refusal_accuracy"] == 0.5
    assert s["unanswerable"]["phrase_recall"] is None and s["unanswerable"]["false_refusal_rate"] is None
    assert sum(s["by_language"][lang]["n"] for lang in ("zh", "en")) == len(ROWS)


def test_summary_of_no_rows_has_no_numbers():
    s = summarize([])
    assert s["n"] == 0 and s["phrase_recall"] is None and s["total_ms_p95"] is None


DOC = "第一段讲别的内容。Web 界面默认端口 8501（Streamlit）。最后一段。"


def _chunk(id, start, end, doc="d.md"):
    return Chunk(id=id, doc_id=doc, text=DOC[start:end], source=doc, heading_path=("部署",), start=start, end=end)


def test_answer_row_judges_a_merged_citation_span():
    item = QAItem("q1", "端口是多少？", answers=["8501", "Streamlit"], evidence=["Web 界面默认端口 8501（Streamlit）。"],
                  reference="默认端口是 8501。")
    merged = _chunk("c1+c2", 0, len(DOC) - 5)  # two adjacent chunks cited as one span
    other = Chunk("c9", "e.md", "无关内容", "e.md")
    # the chain removes unsupported sentences from the text and lists them apart; both count as sentences
    ans = Answer(item.question, "默认端口是 8501 [1]。", [Citation(1, merged), Citation(2, other, supported=False)],
                 [Hit(other), Hit(merged)], standalone_question=item.question, unsupported_sentences=["它还有别的[2]。"],
                 timings_ms={"first_token": 10.0, "total": 20.0}, usage={"prompt_tokens": 5, "completion_tokens": 3})
    r = answer_row(item, ans, RelevanceJudge({"d.md": DOC, "e.md": "无关内容"}))
    assert [c["relevant"] for c in r["citations"]] == [True, False]
    assert r["citations"][0]["start"] == 0 and r["citations"][1]["supported"] is False
    assert r["retrieved"] == ["c9", "c1+c2"] and r["first_relevant"] == 2
    assert r["verdicts"]["phrase_recall"] == 0.5 and r["verdicts"]["all_phrases"] is False
    assert r["verdicts"]["f1"] == 1.0 and r["verdicts"]["refusal_ok"] is True
    assert r["n_sentences"] == 2 and json.loads(json.dumps(r)) == r


def test_answer_row_of_a_refusal_scores_zero():
    item = QAItem("q2", "端口是多少？", answers=["8501"], evidence=["8501"], reference="8501")
    ans = Answer(item.question, "资料中没有答案。最接近的来源：8501", [], [], refused=True)
    r = answer_row(item, ans, RelevanceJudge({}))
    assert r["verdicts"] | {} == {"phrase_recall": 0.0, "all_phrases": False, "f1": 0.0, "refusal_ok": False}
    assert r["n_sentences"] == 0


ITEMS = [QAItem(f"q{i}", f"问题 {i}", answers=["x"]) for i in range(1, 6)]


def fake_answer(calls: list[str]):
    """An answer function (the seam run_config takes): records the ids it was asked."""
    def answer_fn(item: QAItem) -> dict:
        calls.append(item.id)
        return row(item.id, recall=1.0, total=1.0) | {"answer": "new"}
    return answer_fn


@pytest.mark.parametrize("concurrency", [pytest.param(1, id="serial"), pytest.param(3, id="threads")])
def test_run_config_resumes_from_the_rows_file(tmp_path, concurrency):
    out = tmp_path / "dev.default.jsonl"
    earlier = [row("q1", recall=0.0) | {"answer": "old"}, row("q3", recall=0.0) | {"answer": "old"}]
    out.write_text("".join(json.dumps(r) + "\n" for r in earlier) + '{"id": "q4", "answ', encoding="utf-8")  # killed mid-write
    calls: list[str] = []
    rows = run_config(ITEMS, fake_answer(calls), out, concurrency=concurrency, progress=False)
    assert sorted(calls) == ["q2", "q4", "q5"]
    assert [r["id"] for r in rows] == ["q1", "q2", "q3", "q4", "q5"]
    assert [r["answer"] for r in rows] == ["old", "new", "old", "new", "new"]
    calls.clear()
    again = run_config(ITEMS, fake_answer(calls), out, progress=False)
    assert calls == [] and again == rows


def test_run_config_keeps_finished_rows_when_a_question_fails(tmp_path):
    out = tmp_path / "rows.jsonl"

    def flaky(item: QAItem) -> dict:
        if item.id == "q3":
            raise RuntimeError("LLM server went away")
        return row(item.id)

    with pytest.raises(RuntimeError, match="went away"):
        run_config(ITEMS, flaky, out, progress=False)
    kept = [json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert kept == ["q1", "q2"]
    calls: list[str] = []
    run_config(ITEMS, fake_answer(calls), out, progress=False)
    assert calls == ["q3", "q4", "q5"]


def test_run_config_rejects_zero_concurrency(tmp_path):
    with pytest.raises(ValueError, match="concurrency must be >= 1, got 0"):
        run_config(ITEMS, fake_answer([]), tmp_path / "r.jsonl", concurrency=0)


def test_config_toml_overrides_settings(tmp_path):
    path = tmp_path / "top3.toml"
    path.write_text("top_k = 3\nretrieval_mode = 'bm25'\n", encoding="utf-8")
    name, overrides = read_config(path)
    settings = config_settings(overrides, kb="notes", index_dir=tmp_path)
    assert name == "top3" and (settings.top_k, settings.retrieval_mode, settings.kb) == (3, "bm25", "notes")


@pytest.mark.parametrize("text, message", [
    pytest.param("top_kk = 3\n", r"unknown settings \['top_kk'\]", id="unknown-key"),
    pytest.param("top_k = 0\n", "top_k must be > 0, got 0", id="bad-value"),
    pytest.param("top_k = \n", "cannot read", id="bad-toml"),
])
def test_bad_config_fails_clearly(tmp_path, capsys, text, message):
    from rag.eval.__main__ import main

    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    code = main(["answers", "--kb", "x", "--index-dir", str(tmp_path), "--qa", str(ROOT / "data/qa/sample.jsonl"),
                 "--json", str(tmp_path / "out.json"), "--config", str(path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err or "invalid config" in err
    assert __import__("re").search(message, err)
    assert not (tmp_path / "out.json").exists()


def test_report_writes_markdown_and_pngs(tmp_path):
    rows = {"default": ROWS, "top3": ROWS[:3]}
    summaries = {name: config_summary(r) for name, r in rows.items()}
    report = {"n_questions": 5, "qa": "qa.jsonl", "kb": "notes", "configs": summaries}
    md = write_report(report, rows, tmp_path / "report")
    text = md.read_text(encoding="utf-8")
    assert md.name == "report.md"
    assert "](metrics.png)" in text and "](latency.png)" in text
    assert "| key-phrase recall | 0.500 | 0.500 |" in text and "## Follow-up questions" in text
    assert "**a1**" in text  # the best example
    for png in ("metrics.png", "latency.png"):
        assert (tmp_path / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = format_table(summaries)
    assert "default" in table and "top3" in table and "follow-ups" in table


@pytest.mark.llm
def test_answers_end_to_end_on_the_sample_corpus(tmp_path, monkeypatch, capsys):
    from ingest.pipeline import run_ingest
    from rag.eval.__main__ import main
    from rag.llm_server import ensure_server
    from rag.settings import Settings

    monkeypatch.delenv("RAG_LLM_BASE_URL", raising=False)
    monkeypatch.delenv("RAG_CONFIG", raising=False)
    index = tmp_path / "index"
    settings = Settings(kb="sample", index_dir=index)
    run_ingest([ROOT / "data" / "sample"], settings, progress=False)
    judge_url = ensure_server(settings)  # the same embedded server doubles as the judge
    out = tmp_path / "out" / "sample.json"
    code = main(["answers", "--kb", "sample", "--index-dir", str(index), "--qa", str(ROOT / "data/qa/sample.jsonl"),
                 "--json", str(out), "--report", str(tmp_path / "report"), "--limit", "2", "--quiet",
                 "--judge-url", judge_url, "--judge-model", settings.llm_model])
    assert code == 0
    summary = json.loads(out.read_text(encoding="utf-8"))
    assert summary["n_questions"] == 2 and list(summary["configs"]) == ["default"]
    metrics = summary["configs"]["default"]
    for key in ("phrase_recall", "all_phrases", "false_refusal_rate", "cited_share", "citation_precision",
                "removed_citations", "unsupported_sentence_share", "faithfulness", "first_token_ms_p50",
                "total_ms_p95", "prompt_tokens_mean", "completion_tokens_mean", "followup", "unanswerable"):
        assert key in metrics
    assert metrics["n"] == 2 and metrics["total_ms_p50"] > 0
    rows = [json.loads(line) for line in (tmp_path / "out" / "sample.default.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(r["id"] for r in rows) == ["s01", "s02"] and all(r["retrieved"] for r in rows)
    assert (tmp_path / "report" / "report.md").exists()
    assert "key-phrase recall" in capsys.readouterr().out
