"""`python -m rag.eval retrieval|answers|import-squad ...` (the JSON output format is a stable interface)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

EXAMPLE = """examples:
  python -m rag.eval retrieval --kb notes --qa data/qa/llm-notes-zh.dev.jsonl --modes bm25,dense,hybrid --json out.json
  python -m rag.eval retrieval --beir ../shared/datasets/scifact --split test --modes bm25,dense,hybrid --json scifact.json
  python -m rag.eval import-squad ../shared/datasets/cmrc2018-trial/cmrc2018_trial.json --out eval-out/cmrc
"""


def build_parser() -> argparse.ArgumentParser:
    """Sub-commands and their options."""
    parser = argparse.ArgumentParser(prog="python -m rag.eval", epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("retrieval", help="retrieval metrics per mode")
    r.add_argument("--kb")
    r.add_argument("--index-dir", type=Path)
    r.add_argument("--config", type=Path)
    r.add_argument("--qa", type=Path, help="QA JSON Lines file")
    r.add_argument("--beir", type=Path, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    r.add_argument("--split", default="test")
    r.add_argument("--modes", default="bm25,dense,hybrid")
    r.add_argument("--json", type=Path, required=True, help="write the summary and per-question rows here")
    r.add_argument("--translate", action="store_true",
                   help="as the chat does with query_translation on: a question in another language than the knowledge "
                        "base's is also searched translated by the configured LLM (starts it when embedded)")
    r.add_argument("--quiet", action="store_true")
    s = sub.add_parser("import-squad", help="SQuAD-format JSON (CMRC2018) to corpus.jsonl + QA file")
    s.add_argument("path", type=Path)
    s.add_argument("--out", type=Path, required=True)
    from rag.eval.support import add_support_parser

    add_support_parser(sub)
    try:
        from rag.eval.answers import add_answers_parser
    except ImportError:  # answers evaluation not installed in this build
        pass
    else:
        add_answers_parser(sub)
    return parser


def ensure_beir_kb(folder: Path, settings, progress: bool) -> None:
    """Ingest a BEIR corpus into its own knowledge base unless it is already there."""
    from ingest.pipeline import run_ingest
    from rag import store

    if store.peek_manifest(settings) is None:
        from ingest.__main__ import print_summary

        t = time.perf_counter()
        report = run_ingest([folder / "corpus.jsonl"], settings, progress=progress)
        print_summary(report, time.perf_counter() - t, sys.stderr)


def translated_queries(items, retriever, settings) -> dict[str, str]:
    """Each answerable question's search query as the chain builds it with query_translation on."""
    from rag.chain import cross_lingual_query
    from rag.llm import client_from_settings
    from rag.retrieve import with_history

    llm = client_from_settings(settings)
    on = settings.model_copy(update={"query_translation": "on"})
    queries, seconds = {}, []
    for item in items:
        if item.answerable:
            query = with_history(item.question, item.history)
            t = time.perf_counter()
            queries[item.id] = cross_lingual_query(query, retriever.corpus_language, llm, settings=on)
            if queries[item.id] != query:
                seconds.append(time.perf_counter() - t)
    if seconds:
        import numpy as np

        p50, p95 = np.percentile(seconds, [50, 95])
        print(f"translated {len(seconds)} of {len(queries)} questions for retrieval: {p50:.2f} s p50, {p95:.2f} s p95 "
              "a question (not in the latency columns)", file=sys.stderr)
    return queries


def run_retrieval(args) -> int:
    """Evaluate retrieval for each requested mode and write the JSON report."""
    from rag.eval.datasets import load_beir
    from rag.eval.qa import RelevanceJudge, load_qa
    from rag.eval.retrieval import evaluate_mode, format_table
    from rag.rerank import load_reranker
    from rag.retrieve import open_retriever
    from rag.settings import load_settings

    if bool(args.qa) == bool(args.beir):
        print("error: give exactly one of --qa FILE or --beir DIR", file=sys.stderr)
        return 2
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - {"bm25", "dense", "hybrid", "rerank"}
    if unknown:
        print(f"error: unknown modes {sorted(unknown)}; choose from bm25,dense,hybrid,rerank", file=sys.stderr)
        return 2
    kb = args.kb or (f"beir-{args.beir.resolve().name}" if args.beir else None)
    settings = load_settings(args.config, kb=kb, index_dir=args.index_dir)
    qrels = None
    if args.beir:
        ensure_beir_kb(args.beir, settings, not args.quiet)
        items, qrels = load_beir(args.beir, args.split)
    else:
        items = load_qa(args.qa)
    retriever = open_retriever(settings)
    reranker = load_reranker(settings) if "rerank" in modes else None
    if "rerank" in modes and reranker is None:
        print("error: mode 'rerank' needs a reranker (set RAG_RERANKER)", file=sys.stderr)
        return 2
    judge = RelevanceJudge({d: r.text for d, r in retriever.state.documents.items()})
    queries = translated_queries(items, retriever, settings) if args.translate else None
    summaries, per_question = {}, []
    for mode in modes:
        summaries[mode], rows = evaluate_mode(retriever, items, mode, judge, qrels, reranker, progress=not args.quiet,
                                              queries=queries)
        per_question += rows
    report = {"n_questions": len(items), "kb": settings.kb, "modes": summaries, "per_question": per_question}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    print(format_table(summaries))
    print(f"{len(items)} questions ({sum(i.answerable for i in items)} answerable); report: {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "retrieval":
        return run_retrieval(args)
    if args.command == "import-squad":
        from rag.eval.datasets import import_squad

        corpus, qa, n = import_squad(args.path, args.out)
        print(f"wrote {corpus} and {qa} ({n} questions)")
        return 0
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
