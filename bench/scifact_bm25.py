"""SciFact: BM25's k1 and b, chosen on the 809 train claims, reported on the 300 test claims.

    OMP_NUM_THREADS=1 nice -n 10 python -m bench.scifact_bm25      # ~10 min on 2 cores

For each (k1, b) it rebuilds the app's BM25 (rag.bm25 over rag.text.tokenize, whole abstracts) and scores
BM25 alone and the default for an English knowledge base: BM25 fused with bge-small-en (rag.fuse.hybrid,
50 candidates a channel) after dense Rocchio feedback (the app's feedback_docs / feedback_weight), as
bench.scifact_prf computes it.
Prints nDCG@10 per split; the app's default is k1 1.5, b 0.75 (rag.bm25.BM25Params).
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np

from bench.scifact_docs import abstracts
from bench.scifact_prf import SPLITS, app_dense, hybrid_scores, load_claims, load_corpus, ranking, scored
from rag.bm25 import BM25Index, BM25Params
from rag.text import normalize, tokenize

K1 = (0.6, 0.9, 1.2, 1.5, 2.0)
B = (0.4, 0.6, 0.75, 0.9)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__).parse_args(argv)
    corpus = load_corpus()
    docs = abstracts()
    tokens = [tokenize(normalize(docs[i])) for i in corpus.ids]
    claims = {split: load_claims(corpus, split) for split in SPLITS}
    dense = {split: app_dense(corpus, c) for split, c in claims.items()}  # the app's default feedback
    print("| k1 | b | train BM25 | train hybrid + Rocchio | test BM25 | test hybrid + Rocchio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for k1, b in itertools.product(K1, B):
        index = BM25Index.from_tokens(tokens, BM25Params(k1=k1, b=b))
        row = []
        for split, c in claims.items():
            bm25 = np.stack([index.scores(t) for t in c.tokens])
            alone = scored(c, lambda i, bm25=bm25: ranking(corpus, bm25[i], 100, True))[:, 0].mean()
            fused = hybrid_scores(corpus, c, dense[split], bm25, 50)[:, 0].mean()
            row += [f"{alone:.3f}", f"{fused:.3f}"]
        print(f"| {k1} | {b} | " + " | ".join(row) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
