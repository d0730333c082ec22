"""The shipped BM25 (`rag.bm25.BM25Index`) against `rank_bm25.BM25Okapi` on the same tokens.

Checks identical top-10 rows and max |score difference| per query, and times build and query for
both. rank_bm25 loops over every document in Python per query term, so at the large size it gets
fewer queries (the shipped index answers all of them).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from bench import corpus
from bench.common import module_main, pct, questions, table

SIZES = {False: (10_000, 100_000), True: (2_000, 10_000)}
SCIFACT_DOCS = {False: 1500, True: 300}
N_QUERIES = 100
N_QUERIES_RANK_BM25_LARGE = {False: 10, True: 50}
TOP = 10
TOLERANCE = 1e-6


def reference_top(scores: np.ndarray, k: int) -> np.ndarray:
    """rank_bm25's top-k under the shipped contract: matching rows only, score desc then row asc."""
    rows = np.flatnonzero(scores > 0)
    order = np.lexsort((rows, -scores[rows]))
    return rows[order][:k]


def compare(n: int, queries: list[list[str]], n_ref: int, scifact_docs: int) -> dict:
    """Build both indexes over `n` chunks, time them, and compare on the first `n_ref` queries."""
    from rank_bm25 import BM25Okapi

    from rag.bm25 import BM25Index

    tokens = corpus.scaled(n, scifact_docs).tokens
    t = time.perf_counter()
    ours = BM25Index.from_tokens(tokens)
    build_ours = time.perf_counter() - t
    t = time.perf_counter()
    ref = BM25Okapi(tokens)
    build_ref = time.perf_counter() - t
    ours.top_k(queries[0], TOP)  # warm-up
    ours_ms = []
    for q in queries:
        t = time.perf_counter()
        ours.top_k(q, TOP)
        ours_ms.append((time.perf_counter() - t) * 1000)
    ref_ms, same, tie_only, max_diff = [], 0, 0, 0.0
    for q in queries[:n_ref]:
        t = time.perf_counter()
        ref_scores = ref.get_scores(q)
        ref_rows = reference_top(ref_scores, TOP)
        ref_ms.append((time.perf_counter() - t) * 1000)
        rows, _ = ours.top_k(q, TOP)
        max_diff = max(max_diff, float(np.max(np.abs(ours.scores(q) - ref_scores))))
        if np.array_equal(rows, ref_rows):
            same += 1
        elif np.allclose(np.sort(ref_scores[rows]), np.sort(ref_scores[ref_rows]), rtol=0, atol=TOLERANCE):
            tie_only += 1  # different rows, same scores: a tie broken differently
    return {"n": n, "build": (build_ours, build_ref), "ours_ms": ours_ms, "ref_ms": ref_ms,
            "checked": n_ref, "same": same, "tie_only": tie_only, "max_diff": max_diff}


def run(quick: bool) -> str:
    """Compare at both sizes and return the Markdown section."""
    from rag.text import tokenize

    queries = [tokenize(q) for q in questions(N_QUERIES)]
    small, large = SIZES[quick]
    results = [
        compare(small, queries, len(queries), SCIFACT_DOCS[quick]),
        compare(large, queries, N_QUERIES_RANK_BM25_LARGE[quick], SCIFACT_DOCS[quick]),
    ]
    check_rows = [
        [f"{r['n']:,}", r["checked"], f"{r['same']}/{r['checked']}", r["tie_only"], f"{r['max_diff']:.1e}",
         "yes" if r["same"] + r["tie_only"] == r["checked"] and r["max_diff"] <= TOLERANCE else "NO"]
        for r in results
    ]
    speed_rows = []
    for r in results:
        ours, ref = pct(r["ours_ms"], 50), pct(r["ref_ms"], 50)
        speed_rows.append([f"{r['n']:,}", r["build"][0], r["build"][1], r["build"][1] / r["build"][0],
                           ours, pct(r["ours_ms"], 95), ref, pct(r["ref_ms"], 95), f"{ref / ours:,.0f}×"])
    return "\n\n".join([
        "## BM25: shipped `BM25Index` vs `rank_bm25.BM25Okapi`",
        f"Same jieba tokens for both (bench.corpus scale-up of real llm-notes-zh + scifact chunks); {len(queries)} real "
        f"dev questions tokenized with `rag.text.tokenize`. Correctness: top-{TOP} rows equal (rank_bm25 ranked by "
        f"score desc, row asc, over rows with score > 0 — the shipped `top_k` contract) and max |score diff| over all "
        f"rows ≤ {TOLERANCE:g}; a top-10 whose rows differ but whose scores are equal is a tie at the 10th place broken differently (replicas make exact ties common), counted separately and allowed. rank_bm25 answers every query at {small:,} chunks but only the first "
        f"{N_QUERIES_RANK_BM25_LARGE[quick]} at {large:,} (it scans every document in Python per query term); the "
        f"shipped index answers all {len(queries)} at both sizes. Query time = `top_k(q, {TOP})` vs "
        f"`get_scores(q)` + top-{TOP} selection. Goal: ≥ 20× faster queries.",
        table(["chunks", "queries checked", "identical top-10", "other rows, equal scores (tie at the cut)", "max abs score diff", "pass"], check_rows),
        table(["chunks", "build ours s", "build rank_bm25 s", "build ratio", "query ours p50 ms", "ours p95 ms",
               "rank_bm25 p50 ms", "rank_bm25 p95 ms", "query speed-up (p50)"], speed_rows),
    ])


def main(argv: list[str] | None = None) -> int:
    """Run alone: `python -m bench.bm25_vs_rank_bm25 [--quick]`."""
    return module_main(run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
