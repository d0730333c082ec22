"""End-to-end answer evaluation: every QA item through the full chain, per settings config.

`python -m rag.eval answers` runs `rag.chain.answer` for each question, appends one JSON line per
question to `<json stem>.<config>.jsonl` (so an interrupted run resumes), and aggregates key-phrase
recall, char F1, refusal behaviour, citation quality, latency and token usage per config.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from rag.eval.qa import QAItem, RelevanceJudge, answer_phrase_recall, char_f1
from rag.text import question_language

logger = logging.getLogger(__name__)

EXAMPLE = """examples:
  python -m rag.eval answers --kb notes --qa data/qa/llm-notes-zh.dev.jsonl --json eval-out/answers.json --report eval-out/report
  python -m rag.eval answers --kb notes --qa data/qa/llm-notes-zh.dev.jsonl --json out.json --config top3.toml --config top8.toml
A config is a TOML file of Settings overrides (e.g. `top_k = 3`); its file stem names it.
Rows go to <json stem>.<config>.jsonl next to --json; a rerun skips the ids already there
(delete that file to start a config over).
"""
JUDGE_PROMPT = """You check whether an answer is supported by its sources.

Sources:
{sources}

Answer:
{answer}

Is every claim in the answer supported by the sources above? Reply with one word: yes or no."""

AnswerFn = Callable[[QAItem], dict]


def add_answers_parser(sub) -> None:
    """Register the `answers` sub-command on the `python -m rag.eval` parser."""
    p = sub.add_parser("answers", help="answer quality of the full chain per config", epilog=EXAMPLE,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kb")
    p.add_argument("--index-dir", type=Path)
    p.add_argument("--qa", type=Path, required=True, help="QA JSON Lines file")
    p.add_argument("--json", type=Path, required=True, help="write the summary here (rows go next to it)")
    p.add_argument("--report", type=Path, help="write report.md and PNG plots into this folder")
    p.add_argument("--config", type=Path, action="append", default=[], help="TOML of Settings overrides (repeatable)")
    p.add_argument("--limit", type=int, help="only the first N questions")
    p.add_argument("--concurrency", type=int, default=1, help="questions in flight at once (server backends)")
    p.add_argument("--judge-url", help="OpenAI-compatible /v1 URL of an LLM judge for faithfulness")
    p.add_argument("--judge-model", help="model name for the judge")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_answers)


# --- configs ----------------------------------------------------------------------------------


def read_config(path: Path) -> tuple[str, dict]:
    """(name, overrides) of one config TOML (rag.settings.read_toml: unknown names are an error)."""
    from rag.settings import read_toml

    return Path(path).stem, read_toml(path)


def config_settings(overrides: dict, *, kb: str | None, index_dir: Path | None):
    """Settings for `kb` through the one loader, the config's values as explicit overrides (they beat env)."""
    from pydantic import ValidationError

    from rag.settings import load_settings

    try:
        return load_settings(None, **(overrides | {k: v for k, v in {"kb": kb, "index_dir": index_dir}.items() if v}))
    except ValidationError as e:
        raise ValueError(f"invalid config values {overrides}: {e}") from e


def load_configs(paths: Sequence[Path]) -> dict[str, dict]:
    """Config name -> overrides; one "default" config without overrides when none is given."""
    configs: dict[str, dict] = {}
    for path in paths:
        name, overrides = read_config(path)
        if name in configs:
            raise ValueError(f"two configs are named {name!r} (file stems must differ): {path}")
        configs[name] = overrides
    return configs or {"default": {}}


# --- one question -----------------------------------------------------------------------------


def answer_row(item: QAItem, ans, judge: RelevanceJudge, top: int = 10) -> dict:
    """The JSON row of one answered question: the answer, its citations and the verdicts."""
    from rag.cite import source_headings, split_sentences, strip_markers

    judgeable = bool(item.evidence or item.doc_ids)
    citations = [{"n": c.n, "doc_id": c.chunk.doc_id, "heading": c.chunk.heading, "page": c.page,
                  "page_end": c.page_end, "start": c.chunk.start, "end": c.chunk.end, "pieces": [list(p) for p in c.pieces],
                  "relevant": cited_relevant(item, c, judge) if judgeable else None,
                  "supported": c.supported} for c in ans.citations]
    first_relevant = next((i for i, h in enumerate(ans.hits, 1) if judgeable and judge.relevant(item, h.chunk)), None)
    plain = strip_markers(ans.text)
    recall = None if not (item.answerable and item.answers) else 0.0 if ans.refused else answer_phrase_recall(plain, item.answers)
    f1 = None if not item.reference else 0.0 if ans.refused else round(char_f1(plain, item.reference), 4)
    return {
        "id": item.id, "question": item.question, "standalone_question": ans.standalone_question,
        "search_query": ans.search_query,
        "answer": ans.text, "refused": ans.refused, "refusal_reason": ans.refusal_reason, "answer_mode": ans.answer_mode,
        "notice": ans.notice, "draft": ans.draft, "answerable_p": ans.answerable_p, "evidence_score": ans.evidence_score,
        "evidence": [{"n": s.n, "doc_id": s.doc_id, "title": s.title, "headings": list(source_headings(s)),
                      "text": s.text, "pieces": [list(p) for p in s.pieces]} for s in ans.evidence],
        "evidence_phrase_recall": None if not (item.answerable and item.answers) else
        answer_phrase_recall(" ".join(s.text for s in ans.evidence), item.answers),
        "answerable": item.answerable, "followup": bool(item.history),
        "retrieved": [h.chunk.id for h in ans.hits[:top]], "first_relevant": first_relevant,
        "citations": citations, "removed_citations": ans.removed_citations,
        "n_sentences": 0 if ans.refused else len(split_sentences(ans.text)) + len(ans.unsupported_sentences),
        "unsupported_sentences": list(ans.unsupported_sentences),
        "verdicts": {"phrase_recall": recall, "all_phrases": None if recall is None else recall == 1.0,
                     "f1": f1, "refusal_ok": ans.refused != item.answerable},
        "timings_ms": dict(ans.timings_ms), "usage": dict(ans.usage),
    }


def cited_relevant(item: QAItem, citation, judge: RelevanceJudge) -> bool:
    """Whether what a citation points at holds the evidence, or a restatement of it: its evidence pieces when it
    has them, else its chunk."""
    from rag.records import Chunk

    if not citation.pieces:
        return judge.relevant(item, citation.chunk, restated=True)
    return any(judge.relevant(item, Chunk(id="", doc_id=citation.chunk.doc_id, text=q["text"], source="",
                                          start=q["start"], end=q["end"]), restated=True) for q in citation.quotes())


def judge_faithful(client, ans) -> bool | None:
    """Ask an LLM judge whether the answer is supported by its cited sources (None: unclear reply)."""
    if ans.refused:
        return None
    if not ans.citations:
        return False  # nothing cited, so nothing supports it
    sources = "\n\n".join(f"[{c.n}] {c.chunk.text}" for c in ans.citations)
    reply = client.chat([{"role": "user", "content": JUDGE_PROMPT.format(sources=sources, answer=ans.text)}],
                        temperature=0.0, max_tokens=8).text.strip().lower()
    if reply.startswith(("yes", "是")):
        return True
    if reply.startswith(("no", "否", "不")):
        return False
    logger.warning("judge reply is neither yes nor no: %r", reply[:80])
    return None


# --- one config -------------------------------------------------------------------------------


def rows_path(json_path: Path, config: str) -> Path:
    """Where the per-question rows of `config` go: `<json stem>.<config>.jsonl` next to the summary."""
    return json_path.with_name(f"{json_path.stem}.{config}.jsonl")


def read_rows(path: Path) -> dict[str, dict]:
    """Rows already written by an earlier run, by id; a broken line (killed mid-write) is re-run."""
    rows: dict[str, dict] = {}
    if not path.exists():
        return rows
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows[row["id"]] = row
        except (json.JSONDecodeError, KeyError, TypeError):
            logger.warning("%s:%d: unreadable row; that question is answered again", path, n)
    return rows


def run_config(items: Sequence[QAItem], answer_fn: AnswerFn, out_path: Path, *, concurrency: int = 1,
               progress: bool = True, desc: str = "answers") -> list[dict]:
    """Answer every item not yet in `out_path`, appending each row as it finishes; rows in item order."""
    from tqdm import tqdm

    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    done = read_rows(out_path)
    todo = [item for item in items if item.id not in done]
    if len(todo) < len(items):
        logger.info("%s: reusing %d rows from %s", desc, len(items) - len(todo), out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # a run killed mid-write leaves a partial last line: start the next row on a fresh one
    torn = out_path.exists() and out_path.stat().st_size and not out_path.read_bytes().endswith(b"\n")
    with out_path.open("a", encoding="utf-8") as fh, \
            tqdm(total=len(items), initial=len(items) - len(todo), desc=desc, disable=not progress) as bar, \
            ThreadPoolExecutor(max_workers=concurrency) as pool:
        if torn:
            fh.write("\n")
        futures = [pool.submit(answer_fn, item) for item in todo]
        try:
            for future in as_completed(futures):
                row = future.result()
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")  # only this thread writes
                fh.flush()
                done[row["id"]] = row
                bar.update(1)
        except BaseException:
            pool.shutdown(cancel_futures=True)  # keep what finished; a rerun resumes from here
            raise
    return [done[item.id] for item in items]


# --- metrics ----------------------------------------------------------------------------------


def _mean(values: Sequence[float]) -> float | None:
    import numpy as np

    return round(float(np.mean(values)), 4) if len(values) else None


def _pct(values: Sequence[float], q: float) -> float | None:
    import numpy as np

    return round(float(np.percentile(values, q)), 1) if len(values) else None


def summarize(rows: Sequence[dict]) -> dict:
    """Aggregate metrics of a set of rows; a metric without data is None."""
    answerable = [r for r in rows if r["answerable"]]
    spoken = [r for r in rows if not r["refused"]]
    recalls = [r["verdicts"]["phrase_recall"] for r in answerable if r["verdicts"]["phrase_recall"] is not None]
    f1s = [r["verdicts"]["f1"] for r in rows if r["verdicts"]["f1"] is not None]
    judged = [c["relevant"] for r in spoken for c in r["citations"] if c["relevant"] is not None]
    sentences = sum(r["n_sentences"] for r in spoken)
    faithful = [r["verdicts"]["faithful"] for r in rows if r["verdicts"].get("faithful") is not None]
    times = {k: [r["timings_ms"][k] for r in rows if r["timings_ms"].get(k) is not None]
             for k in ("first_token", "total", "evidence")}
    return {
        "n": len(rows), "n_answerable": len(answerable), "n_reference": len(f1s),
        "phrase_recall": _mean(recalls),
        "all_phrases": _mean([v == 1.0 for v in recalls]),
        "char_f1": _mean(f1s),
        "refusal_accuracy": _mean([r["refused"] for r in rows if not r["answerable"]]),
        "false_refusal_rate": _mean([r["refused"] for r in answerable]),
        "cited_share": _mean([bool(r["citations"]) for r in spoken]),
        "citation_precision": _mean(judged),
        "removed_citations": sum(r["removed_citations"] for r in rows),
        "unsupported_sentence_share": round(sum(len(r["unsupported_sentences"]) for r in spoken) / sentences, 4) if sentences else None,
        "faithfulness": _mean(faithful),
        "first_token_ms_p50": _pct(times["first_token"], 50), "first_token_ms_p95": _pct(times["first_token"], 95),
        "total_ms_p50": _pct(times["total"], 50), "total_ms_p95": _pct(times["total"], 95),
        "evidence_ms_p50": _pct(times["evidence"], 50), "evidence_ms_p95": _pct(times["evidence"], 95),
        "evidence_phrase_recall": _mean([r["evidence_phrase_recall"] for r in answerable
                                         if r.get("evidence_phrase_recall") is not None]),
        "prompt_tokens_mean": _mean([r["usage"]["prompt_tokens"] for r in rows if r["usage"].get("prompt_tokens")]),
        "completion_tokens_mean": _mean([r["usage"]["completion_tokens"] for r in rows if r["usage"].get("completion_tokens")]),
    }


def config_summary(rows: Sequence[dict]) -> dict:
    """All rows' metrics, with the follow-up and the unanswerable subsets split out, and the questions by
    their language ("zh", "en")."""
    by_language = {lang: summarize([r for r in rows if question_language(r["question"]) == lang]) for lang in ("zh", "en")}
    return summarize(rows) | {"followup": summarize([r for r in rows if r["followup"]]),
                              "unanswerable": summarize([r for r in rows if not r["answerable"]]),
                              "by_language": by_language}


# --- the command ------------------------------------------------------------------------------


def chain_answer_fn(settings, judge_client=None) -> AnswerFn:
    """The real answer function: the full chain on `settings`, judged against its knowledge base.

    The index, the LLM server and the reranker load on the first question, so a fully resumed run
    (e.g. to redo the report) starts nothing.
    """
    import threading

    from rag.chain import answer

    lock, parts = threading.Lock(), {}

    def load() -> dict:
        from rag.llm import client_from_settings
        from rag.rerank import load_reranker
        from rag.retrieve import open_retriever

        with lock:
            if not parts:
                retriever = open_retriever(settings)
                parts.update(retriever=retriever, llm=client_from_settings(settings), reranker=load_reranker(settings),
                             judge=RelevanceJudge({d: r.text for d, r in retriever.state.documents.items()}))
        return parts

    def answer_fn(item: QAItem) -> dict:
        p = load()
        ans = answer(item.question, item.history, settings=settings, retriever=p["retriever"], llm=p["llm"],
                     reranker=p["reranker"])
        row = answer_row(item, ans, p["judge"])
        if judge_client is not None:
            row["verdicts"]["faithful"] = judge_faithful(judge_client, ans)
        return row

    return answer_fn


def run_answers(args) -> int:
    """Evaluate every config, write the JSON summary (and the report); returns the exit code."""
    from rag import store
    from rag.eval.qa import load_qa
    from rag.eval.report import format_table, write_report
    from rag.llm import LLMClient, LLMError

    if bool(args.judge_url) != bool(args.judge_model):
        print("error: give both --judge-url and --judge-model, or neither", file=sys.stderr)
        return 2
    try:
        configs = load_configs(args.config)
        settings = {name: config_settings(o, kb=args.kb, index_dir=args.index_dir) for name, o in configs.items()}
        items = load_qa(args.qa)[: args.limit] if args.limit else load_qa(args.qa)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    judge_client = LLMClient(args.judge_url, model=args.judge_model) if args.judge_url else None
    summaries, rows = {}, {}
    for name, s in settings.items():
        out = rows_path(args.json, name)
        try:
            rows[name] = run_config(items, chain_answer_fn(s, judge_client), out, concurrency=args.concurrency,
                                    progress=not args.quiet, desc=name)
        except (store.KBNotFound, store.IndexMismatch, LLMError, ValueError) as e:
            print(f"error: config {name!r}: {e}\n(finished rows are kept in {out}; rerun to resume)", file=sys.stderr)
            return 2
        summaries[name] = config_summary(rows[name])
    report = {"n_questions": len(items), "qa": str(args.qa), "kb": next(iter(settings.values())).kb,
              "configs": summaries, "rows": {name: str(rows_path(args.json, name)) for name in settings}}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    print(format_table(summaries))
    if args.report:
        print(f"report: {write_report(report, rows, args.report)}")
    print(f"{len(items)} questions ({sum(i.answerable for i in items)} answerable, "
          f"{sum(bool(i.history) for i in items)} follow-ups); summary: {args.json}")
    return 0
