"""Reranker sweep on cached rankings: candidate depth × max tokens per pair, quality and latency.

    python -m bench.rerank_sweep dev cmrc scifact --depths 10,20,30,50 --max-tokens 128,256,512
    flock /tmp/rag-bench.lock python -m bench.rerank_sweep dev scifact --latency 40

The hybrid list of each question (default fusion, depth 50 per channel) is reranked by the bundled
cross-encoder; its scores are cached per (set, max tokens) under eval-out/rankings/, so further depths
cost nothing. `--latency N` times reranking alone on N questions per depth (threads, batch size from
settings; run it under the bench lock).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from tqdm import tqdm

from bench.fusion_sweep import DEPTH, KEYS, with_subsets
from bench.rankings import CACHE, RankingSet, load, metrics
from rag import fuse
from rag.settings import load_settings


def hybrid_top(q, settings) -> list[str]:
    """The question's fused candidates, best first, as the app ranks them."""
    fused = fuse.hybrid(q.dense[:DEPTH], q.bm25[:DEPTH], q.query, settings)
    fused = {k: s * q.prior.get(k, 1.0) if s > 0 else s for k, s in fused.items()}
    return [k for k, _ in fuse.ranked(fused)]


def cross_scores(ranking_set: RankingSet, reranker, settings, depth: int, max_tokens: int) -> dict[str, dict[str, float]]:
    """question id -> {key: cross-encoder score} for its top `depth` candidates (cached on disk)."""
    path = CACHE / f"{ranking_set.name}.rerank-{max_tokens}.json"
    cache = json.loads(path.read_text()) if path.is_file() else {}
    todo = [q for q in ranking_set.questions if len(cache.get(q.id, {})) < depth]
    for q in tqdm(todo, desc=f"{ranking_set.name} rerank max_tokens={max_tokens}"):
        keys = hybrid_top(q, settings)[:depth]
        cache[q.id] = dict(zip(keys, reranker.scores(q.query, [q.text[k] for k in keys])))
    if todo:
        path.write_text(json.dumps(cache))
    return cache


def reranked(q, scores: dict[str, float], settings, depth: int) -> list[str]:
    """Top `depth` candidates in cross-encoder order, then the rest in fused order."""
    top = hybrid_top(q, settings)
    head = sorted(top[:depth], key=lambda k: -scores[k])
    return head + top[depth:]


def main(argv: list[str] | None = None) -> None:
    """Print quality per depth and max tokens; optionally time reranking per depth."""
    parser = argparse.ArgumentParser(prog="python -m bench.rerank_sweep", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+")
    parser.add_argument("--depths", default="10,20,30,50")
    parser.add_argument("--max-tokens", default="256")
    parser.add_argument("--latency", type=int, default=0, help="time reranking on N questions of each set")
    args = parser.parse_args(argv)
    from rag.rerank import bundled_reranker

    depths = [int(d) for d in args.depths.split(",")]
    base = load_settings(None)
    sets = [load(CACHE / f"{name}.json") for name in args.names]
    print("per set: hit@1 / MRR@10 / nDCG@10 (recall@100 for BEIR sets)")
    for max_tokens in [int(t) for t in args.max_tokens.split(",")]:
        settings = base.model_copy(update={"rerank_max_tokens": max_tokens})
        reranker = bundled_reranker(settings)
        cached = {s.name: cross_scores(s, reranker, settings, max(depths), max_tokens) for s in sets}
        parts = with_subsets(sets)
        print(f"{'setting':<28}" + "".join(f"{p.name + f' ({len(p.questions)})':>26}" for p in parts))
        for depth in [0, *depths]:
            cells = ""
            for part in parts:
                scores = cached[part.name.rsplit("-", 1)[0] if part.name not in cached else part.name]
                rows = [metrics(part, q, reranked(q, scores[q.id], settings, depth)) for q in part.questions]
                mean = {k: float(np.mean([r[k] for r in rows])) for k in KEYS}
                cells += f"{mean['hit@1']:>8.3f}{mean['mrr@10']:>6.3f}{mean['ndcg@10']:>6.3f}" + (
                    f"{mean['recall@100']:>6.3f}" if part.doc_level else " " * 6)
            name = "hybrid (no rerank)" if depth == 0 else f"rerank top {depth}, {max_tokens} tok"
            print(f"{name:<28}{cells}")
    if args.latency:
        print_latency(sets, base, depths, args.latency)


def print_latency(sets: list[RankingSet], settings, depths: list[int], n: int) -> None:
    """p50 / p95 milliseconds of reranking one question's top `depth` (each set, each depth)."""
    from rag.rerank import bundled_reranker

    reranker = bundled_reranker(settings)
    reranker.scores("warm up", ["the session allocates its buffers on the first call"])
    print(f"rerank latency, {settings.rerank_max_tokens} tokens per pair, batch {settings.rerank_batch_size}, "
          f"threads {settings.rerank_threads or 'all'}: p50 / p95 ms")
    for ranking_set in sets:
        for depth in depths:
            times = []
            for q in ranking_set.questions[:n]:
                keys = hybrid_top(q, settings)[:depth]
                t = time.perf_counter()
                reranker.scores(q.query, [q.text[k] for k in keys])
                times.append((time.perf_counter() - t) * 1000)
            p50, p95 = np.percentile(times, [50, 95])
            print(f"  {ranking_set.name:<16} top {depth:<4} {p50:8.0f} {p95:8.0f}")


if __name__ == "__main__":
    main()
