"""Dense Rocchio feedback through the app's own retriever on a QA set: does the setting chosen on SciFact's
train claims (bench.scifact_prf) hurt the Chinese notes?

    OMP_NUM_THREADS=1 nice -n 10 python -m bench.prf_dev --kb notes --qa data/qa/llm-notes-zh.dev.jsonl --k 2 --alpha 0.4

The retriever is rag.retrieve's, opened on the knowledge base as `python -m rag.eval retrieval` opens it; only
`dense_ranking` changes (FeedbackRetriever: the query vector moved toward the stored vectors of its first k hits,
searched again). Each question is scored by rag.eval.retrieval.evaluate_mode in hybrid mode, parts by language.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.common import DEV_QUESTIONS, table
from bench.scifact_prf import moved
from rag.retrieve import Retriever
from rag.text import language, normalize


class FeedbackRetriever(Retriever):
    """The app's retriever whose dense search runs twice: the second time with the Rocchio query."""

    def __init__(self, base: Retriever, k: int, alpha: float) -> None:
        super().__init__(base.state, base.embedder, base.settings)
        self.feedback, self.alpha = k, alpha

    def dense_ranking(self, query: str, k: int, timings: dict[str, float] | None = None) -> list[tuple[str, float]]:
        """(chunk id, cosine) for the query vector moved toward its first `feedback` hits (as Retriever embeds it)."""
        if self.settings.query_expansion == "both":
            query = self._expand(query)
        vector = self.embedder.encode_queries([normalize(query)])[0]
        first = self.state.search_dense(vector, k)
        stored = self.state.vectors([key for key, _ in first[: self.feedback]])
        if not stored:
            return first
        return self.state.search_dense(moved(vector, np.stack(list(stored.values())), self.alpha), k)


def main(argv: list[str] | None = None) -> None:
    """hit@1 / MRR@10 of hybrid retrieval without and with feedback, all questions and by language."""
    from rag.eval.qa import RelevanceJudge, load_qa
    from rag.eval.retrieval import evaluate_mode
    from rag.retrieve import open_retriever
    from rag.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m bench.prf_dev", description=__doc__.splitlines()[0])
    parser.add_argument("--kb", default="notes")
    parser.add_argument("--qa", type=Path, default=DEV_QUESTIONS)
    parser.add_argument("--k", type=int, default=2, help="feedback hits")
    parser.add_argument("--alpha", type=float, default=0.4)
    args = parser.parse_args(argv)
    base = open_retriever(load_settings(None, kb=args.kb))
    items = load_qa(args.qa)
    judge = RelevanceJudge({d: r.text for d, r in base.state.documents.items()})
    lang = {i.id: language(i.question) for i in items}
    rows = []
    for label, retriever in (("hybrid (app)", base), (f"hybrid + Rocchio k={args.k}, alpha={args.alpha}",
                                                     FeedbackRetriever(base, args.k, args.alpha))):
        _, per_question = evaluate_mode(retriever, items, "hybrid", judge, None, progress=False)
        row = [label]
        for part in (None, "en", "zh"):
            chosen = [r for r in per_question if part is None or lang[r["id"]] == part]
            row.append(f"{np.mean([r['hit@1'] for r in chosen]):.3f} / {np.mean([r['mrr@10'] for r in chosen]):.3f}"
                       f" ({len(chosen)})")
        rows.append(row)
    print(f"{args.qa}, knowledge base {args.kb}, hit@1 / MRR@10 (questions):")
    print(table(["retrieval", "all", "English", "Chinese"], rows))


if __name__ == "__main__":
    main()
