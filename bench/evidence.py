"""Evidence selection on the development set: how many reference key phrases the packed evidence holds.

`python -m bench.evidence [--kb notes] [--qa data/qa/llm-notes-zh.dev.jsonl]` retrieves each answerable
question (follow-ups with their previous user turn, no LLM translation), packs evidence at several budgets
and weightings, and prints key-phrase recall of the packed text (the ceiling for an answer built from it),
estimated tokens, and sentence-scoring time (first time each sentence is seen, cold cache); whole-chunk packing at the old 1,800-token budget is the reference.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

from rag import evidence as ev
from rag.eval.qa import answer_phrase_recall, load_qa
from rag.llm import estimate_tokens
from rag.prompt import format_sources, pack_context
from rag.retrieve import open_retriever, with_history
from rag.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kb", default="notes")
    parser.add_argument("--qa", type=Path, default=Path("data/qa/llm-notes-zh.dev.jsonl"))
    parser.add_argument("--budgets", default="160,240,320,400,560,800")
    args = parser.parse_args(argv)
    settings = load_settings(None, kb=args.kb)
    retriever = open_retriever(settings)
    items = [i for i in load_qa(args.qa) if i.answerable and i.answers]
    docs = retriever.state.documents
    prepared = []
    for item in items:
        query = with_history(item.question, item.history)
        hits = retriever.search(query, k=settings.top_k)
        retriever.embedder.clear_cache()
        t = time.perf_counter()
        scored = ev.score_sentences(query, ev.candidate_sentences(hits, docs), retriever.embedder)
        prepared.append((item, hits, scored, (time.perf_counter() - t) * 1000))
    print(f"{len(items)} answerable questions; candidate sentences per question "
          f"{statistics.mean(len(p[2]) for p in prepared):.0f}; scoring p50 "
          f"{statistics.median(p[3] for p in prepared):.0f} ms\n")
    print("| packing | budget | key-phrase recall | all phrases | est. tokens |\n| --- | --- | --- | --- | --- |")
    recalls, tokens = [], []
    for item, hits, _, _ in prepared:
        sources = pack_context(hits, budget_tokens=1800, count_tokens=estimate_tokens)
        text = format_sources(sources)
        recalls.append(answer_phrase_recall(text, item.answers))
        tokens.append(estimate_tokens(text))
    print(f"| whole chunks | 1800 | {statistics.mean(recalls):.3f} | {statistics.mean(r == 1 for r in recalls):.3f} "
          f"| {statistics.mean(tokens):.0f} |")
    weightings = [ev.RANK_WEIGHT, 0.0, 0.1, 0.2]
    for budget in [int(b) for b in args.budgets.split(",")]:
        for w_rank, heading, follow in [(w, True, True) for w in weightings] + [(ev.RANK_WEIGHT, False, True),
                                                                              (ev.RANK_WEIGHT, True, False)] \
                if budget == settings.evidence_tokens else [(ev.RANK_WEIGHT, True, True), (ev.RANK_WEIGHT, True, False)]:
            recalls, tokens = [], []
            for item, hits, scored, _ in prepared:
                # s.score - RANK_WEIGHT / rank: the better cosine, alone or under the heading; s.cosine: alone
                rescored = [replace(s, score=(s.score - ev.RANK_WEIGHT / s.rank if heading else s.cosine) + w_rank / s.rank)
                            for s in scored]
                packed = ev.pack(rescored, hits, docs, budget, follow=follow)
                text = format_sources(packed.sources)
                recalls.append(answer_phrase_recall(text, item.answers))
                tokens.append(estimate_tokens(text))
            read = "alone or under its heading" if heading else "alone (before)"
            print(f"| evidence, sentence {read}, rank weight {w_rank}{'' if follow else ', no followers'} | {budget} | "
                  f"{statistics.mean(recalls):.3f} | {statistics.mean(r == 1 for r in recalls):.3f} | {statistics.mean(tokens):.0f} |")
        recalls = []
        for item, hits, _scored, _ in prepared:  # the unanswered questions in the notes packed too (before: left out)
            asked = ev.score_sentences(with_history(item.question, item.history),
                                                    ev.candidate_sentences(hits, docs, questions=True), retriever.embedder)
            recalls.append(answer_phrase_recall(format_sources(ev.pack(asked, hits, docs, budget).sources), item.answers))
        print(f"| evidence, unanswered questions kept | {budget} | {statistics.mean(recalls):.3f} | "
              f"{statistics.mean(r == 1 for r in recalls):.3f} | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
