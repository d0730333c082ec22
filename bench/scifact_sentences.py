"""SciFact with a sentence-level dense score: does a claim's best-matching sentence find its abstract better than
the abstract's one vector? Weights chosen on the 809 train claims, reported on the 300 test claims.

    OMP_NUM_THREADS=2 nice -n 10 python -m bench.scifact_sentences embed   # bge-small-en, every sentence (~20 min)
    nice -n 10 python -m bench.scifact_sentences sweep

`embed` cuts every abstract into sentences (rag.text.sentence_spans over the text; the title is read with each
sentence, "title\\nsentence", as the app reads a sentence under its heading) and embeds them with the app's
bge-small-en (passage side), kept under eval-out/vectors/ with the row of each sentence's abstract.

`sweep` starts from the default for an English knowledge base, as bench.scifact_prf computes it: BM25 fused with
bge-small-en after dense Rocchio feedback (rag.fuse.hybrid, 50 candidates a channel), and tries two uses of
maxsim(claim, abstract) = the best cosine between the claim and one of the abstract's sentences:
- dense channel: the abstract's score = (1 - w) * Rocchio cosine + w * maxsim, then the app's fusion;
- re-scoring: the fused top n re-ordered by (1 - w) * fused + w * min-max(maxsim over those n);
- a third channel: BM25, bge with Rocchio and maxsim lists (50 each) fused by weights (min-max or z-score).
"""

from __future__ import annotations

import argparse

import numpy as np
from tqdm import tqdm

from bench.common import table
from bench.fusion_sweep import zscore
from bench.scifact_docs import EMBEDDERS, VECTORS
from bench.scifact_prf import (
    SPLITS,
    Claims,
    Corpus,
    app_dense,
    bootstrap,
    fused,
    load_claims,
    load_corpus,
    ranking,
    scored,
)
from rag import fuse
from rag.text import normalize, sentence_spans

SENTENCES = VECTORS / "scifact-bge-sentences.npy"
OWNERS = VECTORS / "scifact-bge-sentences-rows.npy"  # corpus row (bench.scifact_prf order) of each sentence
WEIGHTS = [w / 10 for w in range(11)]
NORMALIZERS = {"min-max": fuse.minmax, "z-score": zscore}
# (BM25, bge Rocchio, maxsim) weights in steps of 0.1, each channel weighted
THREE_CHANNELS = [(n, (a / 10, b / 10, round(1 - a / 10 - b / 10, 1))) for n in NORMALIZERS
                  for a in range(1, 9) for b in range(1, 10 - a)]
DEPTHS = (10, 20, 50)
CANDIDATES = 50  # a channel, as the app


def units(corpus: Corpus) -> tuple[list[str], np.ndarray]:
    """("title\\nsentence" texts, the corpus row each belongs to) for every abstract."""
    import json

    from bench.common import SCIFACT

    with SCIFACT.open(encoding="utf-8") as fh:
        docs = {str(d["_id"]): (d["title"], d["text"]) for d in map(json.loads, fh)}
    texts, rows = [], []
    for row, doc_id in enumerate(corpus.ids):
        title, text = docs[doc_id]
        spans = list(sentence_spans(text)) or [(0, len(text))]
        for s, e in spans:
            if text[s:e].strip():
                texts.append(normalize(f"{title}\n{text[s:e]}"))
                rows.append(row)
    return texts, np.array(rows)


def embed(_args) -> None:
    from rag.embed import load_embedder
    from rag.settings import load_settings

    corpus = load_corpus()
    texts, rows = units(corpus)
    print(f"{len(texts)} sentences of {len(corpus.ids)} abstracts, {np.mean([len(t) for t in texts]):.0f} chars each")
    embedder = load_embedder(load_settings(None, embedder=EMBEDDERS["bge"]))
    batch = 64
    vectors = np.concatenate([embedder.encode_passages(texts[i:i + batch])
                              for i in tqdm(range(0, len(texts), batch), desc="bge sentences")])
    np.save(SENTENCES, vectors.astype(np.float32))
    np.save(OWNERS, rows)


def maxsim(queries: np.ndarray, sentences: np.ndarray, owners: np.ndarray, n_docs: int) -> np.ndarray:
    """Per query and abstract, the best cosine with one of its sentences (claims x abstracts)."""
    out = np.full((len(queries), n_docs), -1.0, dtype=np.float32)
    for lo in range(0, len(queries), 64):
        sims = queries[lo:lo + 64] @ sentences.T
        block = out[lo:lo + 64]
        for j in range(sims.shape[0]):
            np.maximum.at(block[j], owners, sims[j])
    return out


def _scaled(values: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] (a flat list to 0)."""
    span = values.max() - values.min()
    return (values - values.min()) / span if span > 0 else np.zeros_like(values)


def rescored(corpus: Corpus, ranked: list[list[tuple[str, float]]], best: np.ndarray, depth: int, w: float):
    """Each claim's fused list with its top `depth` re-ordered by (1 - w) * fused + w * maxsim, both min-max."""
    row_of = {d: i for i, d in enumerate(corpus.ids)}

    def run(i: int) -> list[tuple[str, float]]:
        head, tail = ranked[i][:depth], ranked[i][depth:]
        f = _scaled(np.array([s for _, s in head]))
        m = _scaled(np.array([best[i, row_of[d]] for d, _ in head]))
        order = np.lexsort((np.arange(len(head)), -((1 - w) * f + w * m)))
        return [head[k] for k in order] + tail
    return run


def split_results(corpus: Corpus, c: Claims, sentences: np.ndarray, owners: np.ndarray) -> dict[tuple, np.ndarray]:
    """(family, w) -> per-claim (nDCG@10, recall@100) of one split."""
    dense = app_dense(corpus, c)
    best = maxsim(c.vectors, sentences, owners, len(corpus.ids))
    ranked = [fused(corpus, dense[i], c.bm25[i], CANDIDATES) for i in range(len(c.questions))]  # the default's lists
    out = {("default", 0.0): scored(c, lambda i: ranked[i]),
           ("maxsim alone", 0.0): scored(c, lambda i: ranking(corpus, best[i], 100))}
    for w in tqdm(WEIGHTS[1:], desc="dense channel"):
        mixed = (1 - w) * dense + w * best
        out[("dense channel", w)] = scored(c, lambda i, m=mixed: fused(corpus, m[i], c.bm25[i], CANDIDATES))
    for depth in DEPTHS:
        for w in tqdm(WEIGHTS[1:], desc=f"re-score top {depth}"):
            out[(f"re-score top {depth}", w)] = scored(c, rescored(corpus, ranked, best, depth, w))
    lists = [(ranking(corpus, c.bm25[i], CANDIDATES, True), ranking(corpus, dense[i], CANDIDATES),
              ranking(corpus, best[i], CANDIDATES)) for i in range(len(c.questions))]
    for norm, weights in tqdm(THREE_CHANNELS, desc="three channels"):
        out[(f"three channels, {norm}", weights)] = scored(c, lambda i, n=norm, w=weights: fuse.ranked(
            fuse.weighted([dict(x) for x in lists[i]], list(w), NORMALIZERS[n])))
    return out


def sweep(_args) -> None:
    corpus = load_corpus()
    sentences, owners = np.load(SENTENCES), np.load(OWNERS)
    print(f"{len(sentences)} sentence vectors ({sentences.nbytes / 2**20:.0f} MiB float32) "
          f"for {len(corpus.ids)} abstracts")
    per_split = {split: split_results(corpus, load_claims(corpus, split), sentences, owners) for split in SPLITS}
    results = {key: {split: per_split[split][key] for split in SPLITS} for key in per_split["test"]}
    base = results[("default", 0.0)]
    rows = []
    for family in dict.fromkeys(k[0] for k in results):
        members = {k: v for k, v in results.items() if k[0] == family}
        chosen = max(members, key=lambda k: members[k]["train"][:, 0].mean())
        on_test = max(members, key=lambda k: members[k]["test"][:, 0].mean())
        for label, key in [(f"{family}, train-best w={chosen[1]}", chosen)] + (
                [(f"{family}, tuned on test w={on_test[1]}", on_test)] if len(members) > 1 else []):
            r = members[key]
            delta = r["test"][:, 0] - base["test"][:, 0]
            lo, hi = bootstrap(delta)
            rows.append([label, f"{r['train'][:, 0].mean():.3f}", f"{r['test'][:, 0].mean():.3f} / "
                         f"{r['test'][:, 1].mean():.3f}", f"{delta.mean():+.3f} ({lo:+.3f} … {hi:+.3f})",
                         f"{int((delta > 1e-9).sum())} / {int((delta < -1e-9).sum())}"])
    print(table(["setting", "train nDCG@10", "test nDCG@10 / recall@100", "Δ test (95% bootstrap)",
                 "claims better / worse"], rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("embed").set_defaults(run=embed)
    sub.add_parser("sweep").set_defaults(run=sweep)
    args = parser.parse_args(argv)
    args.run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
