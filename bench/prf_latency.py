"""Per-step latency of query-time feedback on SciFact (bench.scifact_prf), the claim's embedding as the reference.

    flock /tmp/rag-bench.lock nice -n 10 python -m bench.prf_latency --queries 100
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.common import SCIFACT, pct, table
from bench.scifact_docs import EMBEDDERS
from bench.scifact_prf import Corpus, expansion, fused, load_corpus, relevance_model, rocchio_scores, top_rows
from rag.settings import Settings
from rag.text import normalize, tokenize


def step_times(corpus: Corpus, embedder, claim: str, args) -> dict[str, float]:
    """Milliseconds of each step for one claim: embedding, both searches, both feedback passes, fusion."""
    ms: dict[str, float] = {}
    t = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal t
        now = time.perf_counter()
        ms[step] = (now - t) * 1000
        t = now

    q = embedder.encode_queries([normalize(claim)])[0]
    lap("embed the claim (reference)")
    dense = corpus.vectors @ q
    rows = top_rows(dense, args.candidates)
    lap("dense search")
    moved = rocchio_scores(corpus.vectors, q, rows[: args.k], args.alpha)
    lap(f"Rocchio, k={args.k}: the mean vector and a second dense search")
    bm25 = corpus.bm25.scores(tokenize(normalize(claim)))
    lap("BM25 search")
    feedback = top_rows(bm25, args.rm3_k)
    terms = relevance_model(corpus.bm25, feedback, np.maximum(bm25[feedback], 1e-9), args.terms)
    expansion(corpus.bm25, terms)
    lap(f"RM3, k={args.rm3_k}, {args.terms} terms: the relevance model and a second BM25 search")
    fused(corpus, moved, bm25, args.candidates)
    lap("fusion")
    return ms


def latency(args) -> None:
    """p50 / p95 ms per claim of each step, the query embedding as the reference, over `--queries` test claims."""
    from rag.embed import load_embedder
    from rag.eval.datasets import load_beir
    from rag.settings import load_settings

    corpus = load_corpus()
    embedder = load_embedder(load_settings(None, embedder=EMBEDDERS["bge"]))
    items, _ = load_beir(SCIFACT.parent, "test")
    runs = [step_times(corpus, embedder, item.question, args) for item in items[: args.queries]]
    reference = pct([r["embed the claim (reference)"] for r in runs], 50)
    rows = [[step, pct([r[step] for r in runs], 50), pct([r[step] for r in runs], 95),
             pct([r[step] for r in runs], 50) / reference] for step in runs[0]]
    print(f"{len(runs)} SciFact test claims over 5,183 abstracts, ms (numpy exact search; threads as OMP_NUM_THREADS):")
    print(table(["step", "p50", "p95", "p50 / embedding p50"], rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.prf_latency", description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--candidates", type=int, default=Settings().candidates)
    parser.add_argument("--k", type=int, default=2, help="Rocchio feedback abstracts")
    parser.add_argument("--alpha", type=float, default=0.4)
    parser.add_argument("--rm3-k", type=int, default=2)
    parser.add_argument("--terms", type=int, default=5)
    latency(parser.parse_args(argv))


if __name__ == "__main__":
    main()
