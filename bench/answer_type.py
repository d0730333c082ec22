"""The answer-type rule on a QA set: which year / unit-quantity questions it refuses before the LLM.

`python -m bench.answer_type --kb notes --qa data/qa/llm-notes-zh.dev.jsonl` retrieves each question that asks
for a year or a quantity in a unit, selects its evidence as the chain does (default budget), and prints the
questions `rag.answer_type.missing_answer_type` refuses, with whether they are answerable. On a set of
answerable questions (CMRC2018, the sample set) every refusal is a false one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rag.answer_type import asks_for_type, missing_answer_type
from rag.eval.qa import load_qa
from rag.evidence import select_evidence
from rag.retrieve import open_retriever
from rag.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kb", required=True)
    parser.add_argument("--qa", type=Path, required=True)
    args = parser.parse_args(argv)
    settings = load_settings(None, kb=args.kb)
    retriever = open_retriever(settings)
    items = load_qa(args.qa)
    asked = [i for i in items if asks_for_type(i.question)]
    refused = {True: 0, False: 0}
    for item in asked:
        hits = retriever.search(item.question, k=settings.top_k)
        evidence = select_evidence(item.question, hits, documents=retriever.state.documents,
                                   embedder=retriever.embedder, budget_tokens=settings.evidence_tokens)
        lacking = missing_answer_type(item.question, " ".join(s.text for s in evidence.sources))
        if lacking:
            refused[item.answerable] += 1
            print(f"refused ({lacking}; {'answerable' if item.answerable else 'unanswerable'}): {item.question}")
    n_answerable = sum(i.answerable for i in asked)
    print(f"{args.kb}: {len(items)} questions, {len(asked)} ask a year or a quantity in a unit; refused "
          f"{refused[False]} of {len(asked) - n_answerable} unanswerable, {refused[True]} of {n_answerable} answerable")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
