"""English models on this machine: embedding throughput of bge-small-en (int8 ONNX) vs e5-small on the
same texts, and the bundled cross-encoder's latency per candidate depth and max tokens.

    flock /tmp/rag-bench.lock python -m bench.english_models --docs 64 --questions 20

Embedders alternate (e5, bge, e5, bge) over the same SciFact abstracts so that load from other
processes falls on both; reranking is timed on real SciFact claims with their BM25 candidates.
"""

from __future__ import annotations

import argparse
import json
import time
from itertools import islice

import numpy as np

from bench.common import SCIFACT
from rag.settings import BUNDLED_EN_EMBEDDER, load_settings

DEPTHS = (10, 20, 30)
MAX_TOKENS = (128, 256)


def abstracts(n: int) -> list[str]:
    """The first `n` SciFact abstracts as title + text."""
    with SCIFACT.open(encoding="utf-8") as fh:
        return [f"{d['title']}\n{d['text']}" for d in map(json.loads, islice(fh, n))]


def embed_rates(texts: list[str], rounds: int = 2) -> dict[str, float]:
    """Texts per second of each embedder (best of `rounds`, alternating)."""
    from rag.embed import load_embedder

    embedders = {"e5-small": load_embedder(load_settings(None)),
                 "bge-small-en int8": load_embedder(load_settings(None, embedder=BUNDLED_EN_EMBEDDER))}
    for e in embedders.values():
        e.encode_passages(texts[:4])  # warm up
    best = dict.fromkeys(embedders, 0.0)
    for _ in range(rounds):
        for name, e in embedders.items():
            t = time.perf_counter()
            e.encode_passages(texts, batch_size=32)
            best[name] = max(best[name], len(texts) / (time.perf_counter() - t))
    return best


def rerank_latency(questions: int) -> list[tuple[int, int, float, float]]:
    """(depth, max tokens, p50 ms, p95 ms) of scoring one claim's top BM25 abstracts."""
    from rag.bm25 import BM25Index
    from rag.rerank import bundled_reranker
    from rag.text import tokenize

    docs = abstracts(2000)
    index = BM25Index.from_tokens([tokenize(d) for d in docs])
    with (SCIFACT.parent / "queries.jsonl").open(encoding="utf-8") as fh:
        claims = [json.loads(line)["text"] for line in islice(fh, questions)]
    rows = []
    for tokens in MAX_TOKENS:
        reranker = bundled_reranker(load_settings(None, rerank_max_tokens=tokens))
        reranker.scores("warm up", docs[:2])
        for depth in DEPTHS:
            times = []
            for claim in claims:
                rows_, _ = index.top_k(tokenize(claim), depth)
                t = time.perf_counter()
                reranker.scores(claim, [docs[r] for r in rows_.tolist()])
                times.append((time.perf_counter() - t) * 1000)
            rows.append((depth, tokens, *np.percentile(times, [50, 95])))
    return rows


def main(argv: list[str] | None = None) -> None:
    """Print both tables."""
    parser = argparse.ArgumentParser(prog="python -m bench.english_models", description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=64)
    parser.add_argument("--questions", type=int, default=20)
    args = parser.parse_args(argv)
    rates = embed_rates(abstracts(args.docs))
    base = rates["e5-small"]
    for name, rate in rates.items():
        print(f"embed {name:<18} {rate:6.1f} abstracts/s  ({rate / base:.2f}x e5-small)")
    print("rerank (bundled cross-encoder): depth, max tokens, p50 ms, p95 ms")
    for depth, tokens, p50, p95 in rerank_latency(args.questions):
        print(f"  top {depth:<3} {tokens:>4} tok  {p50:7.0f}  {p95:7.0f}")


if __name__ == "__main__":
    main()
