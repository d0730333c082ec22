"""The listed-but-unanswered rule on a QA set: how far each question's best listed question sentence
(a checklist item in the retrieved notes) beats the best statement, and what a margin would refuse.

    python -m bench.asked_margin --kb notes --qa data/qa/llm-notes-zh.dev.jsonl \
        --queries eval-out/s19/dev.record.jsonl          # the chain's search queries (with translations)
    python -m bench.asked_margin --kb cmrc --qa <CMRC trial qa.jsonl> --limit 400
    python -m bench.asked_margin --kb sample --qa data/qa/sample.jsonl

Each question is retrieved and its evidence selected as the chain does (default settings), then
`Evidence.asked_margin` is read. Prints, per margin, how many answerable and unanswerable questions it
would refuse before the LLM, and the questions with the largest margins. On a set of answerable
questions (CMRC2018, the sample set) every refusal is a false one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rag.eval.qa import load_qa
from rag.evidence import select_evidence
from rag.retrieve import open_retriever
from rag.settings import load_settings

MARGINS = (0.01, 0.02, 0.025, 0.03, 0.04, 0.05)


def recorded_queries(path: Path | None) -> dict[str, str]:
    """Question id -> the search query a recorded answers run used (question plus its translation)."""
    if path is None:
        return {}
    rows = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {r["id"]: r["search_query"] for r in rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kb", required=True)
    parser.add_argument("--qa", type=Path, required=True)
    parser.add_argument("--queries", type=Path, help="a recorded answers run (rag.eval answers): use its search queries")
    parser.add_argument("--limit", type=int, default=0)
    args = parser.parse_args(argv)
    settings = load_settings(None, kb=args.kb)
    retriever = open_retriever(settings)
    items = load_qa(args.qa)[: args.limit or None]
    queries = recorded_queries(args.queries)
    margins: list[tuple[float, bool, str]] = []
    for item in items:
        query = queries.get(item.id, item.question)
        hits = retriever.search(query, k=settings.top_k)
        evidence = select_evidence(query, hits, documents=retriever.state.documents, embedder=retriever.embedder,
                                   budget_tokens=settings.evidence_tokens)
        if evidence.asked_margin is not None:
            margins.append((evidence.asked_margin, item.answerable, item.question))
    n_answerable = sum(i.answerable for i in items)
    print(f"{args.kb}: {len(items)} questions ({n_answerable} answerable); {len(margins)} retrieve text that lists "
          f"questions (default margin {settings.asked_margin})")
    print("| margin | unanswerable refused | answerable refused |")
    print("| --- | --- | --- |")
    for m in MARGINS:
        print(f"| {m} | {sum(g >= m and not a for g, a, _ in margins)} of {len(items) - n_answerable} | "
              f"{sum(g >= m and a for g, a, _ in margins)} of {n_answerable} |")
    for g, a, q in sorted(margins, reverse=True)[:12]:
        print(f"{g:+.3f} {'answerable' if a else 'unanswerable'}: {q}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
