"""Dense Rocchio feedback through the app's own retriever on a QA set: does the setting chosen on SciFact's
train claims (bench.scifact_prf) hurt the Chinese notes?

    OMP_NUM_THREADS=1 nice -n 10 python -m bench.prf_dev --kb notes --qa data/qa/llm-notes-zh.dev.jsonl --k 2 --alpha 0.4
    python -m rag.eval import-squad ../shared/datasets/cmrc2018-trial/cmrc2018_trial.json --out eval-out/cmrc
    OMP_NUM_THREADS=1 nice -n 10 python -m bench.prf_dev --kb cmrc --qa eval-out/cmrc/qa.jsonl
    OMP_NUM_THREADS=1 nice -n 10 python -m bench.prf_dev --kb sample --qa data/qa/sample.jsonl
    OMP_NUM_THREADS=1 nice -n 10 python -m bench.prf_dev --scifact-docs 200   # English, bge-small-en, chunked

The retriever is rag.retrieve's, opened on the knowledge base as `python -m rag.eval retrieval` opens it; only
`dense_ranking` changes (`dense_feedback = "on"`: the query vector moved toward the stored vectors of its first k hits,
searched again). Each question is scored by rag.eval.retrieval.evaluate_mode in hybrid mode, parts by language
(nDCG@10 with BEIR judgements; QA sets judge only the chunks retrieved, so there it adds little to MRR).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.common import DEV_QUESTIONS, table
from rag.retrieve import Retriever
from rag.text import language


def with_feedback(base: Retriever, k: int, alpha: float) -> Retriever:
    """The same retriever with the app's dense Rocchio pass (rag.retrieve, `dense_feedback`) on k hits; k = 0: off."""
    return base.with_settings(base.settings.model_copy(
        update={"dense_feedback": "on" if k else "off", "feedback_docs": k, "feedback_weight": alpha}))


def compare(base: Retriever, items: list, qrels: dict | None, k: int, alpha: float) -> list[list[str]]:
    """Rows of search p50 ms and hit@1 / MRR@10 / nDCG@10 of hybrid retrieval without and with feedback, all
    questions and by language (time the first retriever warm: the models are loaded before)."""
    from rag.eval.qa import RelevanceJudge
    from rag.eval.retrieval import evaluate_mode

    judge = RelevanceJudge({d: r.text for d, r in base.state.documents.items()})
    lang = {i.id: language(i.question) for i in items}
    rows = []
    for label, retriever in (("hybrid, no feedback", with_feedback(base, 0, 0.0)), (f"hybrid + Rocchio k={k}, alpha={alpha}",
                                                     with_feedback(base, k, alpha))):
        summary, per_question = evaluate_mode(retriever, items, "hybrid", judge, qrels, progress=False)
        row = [label, f"{summary['latency_ms_p50']:.1f}"]
        for part in (None, "en", "zh"):
            chosen = [r for r in per_question if part is None or lang[r["id"]] == part]
            row.append(" / ".join(f"{np.mean([r[m] for r in chosen]):.3f}" for m in ("hit@1", "mrr@10", "ndcg@10"))
                       + f" ({len(chosen)})" if chosen else "-")
        rows.append(row)
    return rows


def scifact_subset(n_docs: int, index_dir: Path):
    """bench.auto_embedder's SciFact subset ingested by the app with the default settings (bge-small-en for English):
    (retriever, its fully judged test claims, their qrels)."""
    from bench.auto_embedder import ingest_once, settings_for, subset
    from rag.retrieve import open_retriever

    items, qrels = subset(n_docs, index_dir / "corpus")
    ingest_once("auto", index_dir / "corpus" / "corpus.jsonl", index_dir)
    return open_retriever(settings_for("auto", index_dir)), items, qrels


def main(argv: list[str] | None = None) -> None:
    """Print the comparison for a knowledge base and QA file, or for a fresh SciFact subset."""
    import tempfile

    from rag.eval.qa import load_qa
    from rag.retrieve import open_retriever
    from rag.settings import load_settings

    parser = argparse.ArgumentParser(prog="python -m bench.prf_dev", description=__doc__.splitlines()[0])
    parser.add_argument("--kb", default="notes")
    parser.add_argument("--qa", type=Path, default=DEV_QUESTIONS)
    parser.add_argument("--scifact-docs", type=int, default=0, help="instead: ingest this many SciFact abstracts")
    parser.add_argument("--k", type=int, default=2, help="feedback hits")
    parser.add_argument("--alpha", type=float, default=0.4)
    parser.add_argument("--limit", type=int, default=0, help="only the first N questions")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.scifact_docs:
            base, items, qrels = scifact_subset(args.scifact_docs, Path(tmp))
            where = f"SciFact test claims over {args.scifact_docs} abstracts ingested by the app ({base.embedder.name})"
        else:
            base, items, qrels = open_retriever(load_settings(None, kb=args.kb)), load_qa(args.qa), None
            where = f"{args.qa}, knowledge base {args.kb} ({base.embedder.name})"
        rows = compare(base, items[: args.limit or None], qrels, args.k, args.alpha)
    print(f"{where}, hit@1 / MRR@10 / nDCG@10 (questions):")
    print(table(["retrieval", "search p50 ms", "all", "English", "Chinese"], rows))


if __name__ == "__main__":
    main()
