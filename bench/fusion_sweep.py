"""Fusion sweep: retrieve each question once per retriever, then score many fusion settings.

    python -m bench.fusion_sweep --kb notes --index-dir DIR --qa data/qa/llm-notes-zh.dev.jsonl
    python -m bench.fusion_sweep --beir ../shared/datasets/scifact --index-dir DIR

Prints hit@1 / MRR@10 / nDCG@10 per setting (RRF k, weighted fusion's dense share, candidate
depth per retriever), so the
defaults in `rag/settings.py` can be chosen from measurements rather than guesses.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rag.eval.datasets import load_beir
from rag.eval.qa import RelevanceJudge, load_qa
from rag.eval.retrieval import doc_level, judge_hits, question_metrics
from rag.retrieve import open_retriever, with_history
from rag.settings import load_settings

RRF_KS = (1, 2, 5, 10, 20, 60)
DENSE_WEIGHTS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7)
DEPTHS = (10, 20, 50, 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kb")
    parser.add_argument("--index-dir")
    parser.add_argument("--qa", type=Path)
    parser.add_argument("--beir", type=Path)
    args = parser.parse_args()
    kb = args.kb or (f"beir-{args.beir.resolve().name}" if args.beir else None)
    base = load_settings(None, kb=kb, index_dir=args.index_dir)
    if args.beir:
        items, qrels = load_beir(args.beir, "test")
    else:
        items, qrels = [i for i in load_qa(args.qa) if i.answerable], None
    retriever = open_retriever(base)
    judge = RelevanceJudge({d: r.text for d, r in retriever.state.documents.items()})
    runs = []
    for item in items:
        query = with_history(item.question, item.history)
        runs.append((item, retriever.dense_ranking(query, max(DEPTHS)), retriever.bm25_ranking(query, max(DEPTHS))))

    depth = base.candidates
    grid = [("dense", {}, depth), ("bm25", {}, depth)]
    grid += [(f"rrf k={k}", {"fusion": "rrf", "rrf_k": k}, depth) for k in RRF_KS]
    grid += [(f"weighted dense={w}", {"fusion": "weighted", "dense_weight": w}, depth) for w in DENSE_WEIGHTS]
    for fusion in ("rrf", "weighted"):
        grid += [(f"{fusion} (default) depth={d}", {"fusion": fusion}, d) for d in DEPTHS]
    print(f"{'setting':<30}{'hit@1':>8}{'hit@5':>8}{'mrr@10':>8}{'ndcg@10':>9}")
    for name, update, depth in grid:
        retriever.settings = base.model_copy(update=update)
        rows = []
        for item, dense, sparse in runs:
            mode = name if name in ("dense", "bm25") else "hybrid"
            dense, sparse = dense[:depth], sparse[:depth]
            hits = retriever._fuse(dense if mode != "bm25" else [], sparse if mode != "dense" else [], mode)
            if qrels is not None:
                hits = doc_level(hits)
            item_qrels = qrels.get(item.id, {}) if qrels is not None else None
            gains, ideal = judge_hits(item, hits, judge, item_qrels)
            rows.append(question_metrics(gains, ideal, 1))
        mean = {k: float(np.mean([r[k] for r in rows])) for k in ("hit@1", "hit@5", "mrr@10", "ndcg@10")}
        print(f"{name:<30}{mean['hit@1']:>8.3f}{mean['hit@5']:>8.3f}{mean['mrr@10']:>8.3f}{mean['ndcg@10']:>9.3f}")


if __name__ == "__main__":
    main()
