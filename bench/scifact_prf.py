"""SciFact with pseudo-relevance feedback at query time (no extra model call), chosen on train, reported on test.

    export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
    nice -n 10 python -m bench.scifact_prf embed       # bge-small-en vectors of the 1,109 claims (eval-out/vectors/)
    nice -n 10 python -m bench.scifact_prf sweep       # each family's grid on train -> test (~10 min, 1 thread)
    nice -n 10 python -m bench.scifact_prf compare --k 2 --alpha 0.4 [--candidates 100]   # the chosen Rocchio
    nice -n 10 python -m bench.scifact_prf three-way   # Rocchio inside the three-way fusion (e5 claims embedded once)
    flock /tmp/rag-bench.lock nice -n 10 python -m bench.prf_latency --queries 100   # each step's time
    nice -n 10 python -m bench.prf_dev --k 2 --alpha 0.4   # the same feedback in the app's retriever, dev set

Three families, each fused with BM25 as the app does (rag.fuse.hybrid: min-max, dense 0.5, `--candidates` a channel):
- Rocchio: q' = normalize(q + alpha * mean of the top-k abstract vectors of the first dense search), searched again;
- RM3: the BM25 query L1-normalized, weight 1 - lambda, plus lambda times the relevance model of the top-k
  abstracts of the first BM25 (or fused) list: sum over them of (score share) * tf / length, its top n terms;
- fused Rocchio: Rocchio with the top-k of the first fused list as feedback.
The abstract vectors are bench.scifact_docs's (rows in sorted id order); BM25 is the app's (rag.bm25 over
rag.text.tokenize, whole abstracts, rows in corpus order as there); dense search is the exact dot product
over the 5,183 vectors, what FAISS's flat index computes. Every parameter is chosen on the 809 train claims;
the test figure at that choice is reported, and each grid's best on test is printed marked "tuned on test".
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from bench.common import SCIFACT, table
from bench.rankings import Question, RankingSet, metrics
from bench.scifact_docs import EMBEDDERS, VECTORS, abstracts
from rag import fuse
from rag.bm25 import BM25Index
from rag.dense import rocchio
from rag.settings import Settings
from rag.text import normalize, tokenize

SPLITS = ("train", "test")
JUDGED = RankingSet("scifact", False, [])  # keys are document ids: no chunk-to-document step
ROCCHIO = [(k, a / 10) for k, a in itertools.product(range(1, 11), range(1, 11))]
RM3 = list(itertools.product(("bm25", "fused"), (1, 2, 3, 5, 10), (5, 10, 20, 30), (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)))


@dataclass
class Corpus:
    """The abstracts in corpus order, their bge-small-en vectors and the app's BM25 over them."""

    ids: list[str]
    vectors: np.ndarray
    bm25: BM25Index


@dataclass
class Claims:
    """One split's claims (judged by the qrels) with every abstract's first-pass scores."""

    questions: list[Question]
    vectors: np.ndarray  # bge-small-en query vectors
    tokens: list[list[str]]  # BM25 query tokens
    dense: np.ndarray  # cosine of every abstract, one row per claim
    bm25: np.ndarray  # BM25 score of every abstract


def abstract_vectors(model: str, ids: list[str]) -> np.ndarray:
    """bench.scifact_docs's vectors of `model` (rows in sorted id order), in the order of `ids`."""
    row_of = {d: i for i, d in enumerate(sorted(ids))}
    return np.load(VECTORS / f"scifact-{model}.npy")[[row_of[d] for d in ids]]


def load_corpus() -> Corpus:
    """Abstracts in corpus order, their bge-small-en vectors, BM25 index."""
    docs = abstracts()
    ids = list(docs)
    return Corpus(ids, abstract_vectors("bge", ids), BM25Index.from_tokens([tokenize(normalize(docs[i])) for i in ids]))


def claim_vectors(split: str, texts: list[str], model: str = "bge") -> np.ndarray:
    """Query vectors of a split's claims, embedded once and kept as .npy. Each claim alone, as the app embeds a
    query (bge's int8 graph scales activations per batch: in a batch a vector moves by up to ~0.007 cosine)."""
    path = VECTORS / f"scifact-{model}-claims-{split}.npy"
    if path.is_file():
        return np.load(path)
    from rag.embed import load_embedder
    from rag.settings import load_settings

    embedder = load_embedder(load_settings(None, embedder=EMBEDDERS[model]))
    vectors = np.stack([embedder.encode_queries([normalize(t)])[0] for t in tqdm(texts, desc=f"{model} claims, {split}")])
    np.save(path, vectors)
    return vectors


def load_claims(corpus: Corpus, split: str) -> Claims:
    """A split's claims, their vectors and both channels' scores over every abstract."""
    from rag.eval.datasets import load_beir

    items, qrels = load_beir(SCIFACT.parent, split)
    questions = []
    for item in items:
        gain = {d: float(g) for d, g in qrels[item.id].items()}
        questions.append(Question(item.id, item.question, [], [], gain, {}, {}, [g for g in gain.values() if g > 0]))
    vectors = claim_vectors(split, [q.query for q in questions])
    tokens = [tokenize(normalize(q.query)) for q in questions]
    bm25 = np.stack([corpus.bm25.scores(t) for t in tokens])
    return Claims(questions, vectors, tokens, vectors @ corpus.vectors.T, bm25)


def top_rows(scores: np.ndarray, depth: int) -> np.ndarray:
    """Rows of the `depth` best scores, best first (ties by row, as rag.bm25 breaks them)."""
    rows = np.argpartition(-scores, depth)[:depth]
    return rows[np.lexsort((rows, -scores[rows]))]


def ranking(corpus: Corpus, scores: np.ndarray, depth: int, matched: bool = False) -> list[tuple[str, float]]:
    """(document id, score) of the best `depth` rows; `matched`: only rows scoring above 0 (BM25's matches)."""
    rows = top_rows(scores, depth)
    return [(corpus.ids[r], float(scores[r])) for r in rows if not matched or scores[r] > 0]


def fused(corpus: Corpus, dense: np.ndarray, bm25: np.ndarray, depth: int) -> list[tuple[str, float]]:
    """The app's hybrid of one claim's two score rows (each cut to its top `depth`), best first."""
    return fuse.ranked(fuse.hybrid(ranking(corpus, dense, depth), ranking(corpus, bm25, depth, True), "", Settings()))


def scored(claims: Claims, lists: Callable[[int], list[tuple[str, float]]]) -> np.ndarray:
    """Per claim (nDCG@10, recall@100) of the ranking `lists(i)` of claim i."""
    rows = [metrics(JUDGED, q, [k for k, _ in lists(i)]) for i, q in enumerate(claims.questions)]
    return np.array([[r["ndcg@10"], r["recall@100"]] for r in rows])


def hybrid_scores(corpus: Corpus, claims: Claims, dense: np.ndarray, bm25: np.ndarray, depth: int) -> np.ndarray:
    """Per-claim metrics of the app's fusion of two score matrices."""
    return scored(claims, lambda i: fused(corpus, dense[i], bm25[i], depth))


def rocchio_scores(vectors: np.ndarray, queries: np.ndarray, feedback: np.ndarray, alpha: float) -> np.ndarray:
    """Dense scores of the Rocchio query built from the feedback rows of `vectors`."""
    return rocchio(queries, vectors[feedback], alpha) @ vectors.T


def app_dense(corpus: Corpus, claims: Claims) -> np.ndarray:
    """The app's dense scores for an English knowledge base: Rocchio from the first dense search's top
    feedback_docs, moved by feedback_weight (rag.settings defaults)."""
    s = Settings()
    rows = np.stack([top_rows(row, s.feedback_docs) for row in claims.dense])
    return rocchio_scores(corpus.vectors, claims.vectors, rows, s.feedback_weight)


def relevance_model(index: BM25Index, rows: np.ndarray, weights: np.ndarray, n_terms: int) -> dict[str, float]:
    """RM3's feedback terms: sum over rows of weight * tf / length, the top `n_terms`, L1-normalized."""
    total: dict[int, float] = {}
    for row, weight in zip(rows.tolist(), (weights / weights.sum()).tolist()):
        lo, hi = index.indptr[row], index.indptr[row + 1]
        for t, tf in zip(index.term_ids[lo:hi].tolist(), (index.tfs[lo:hi] / index.doc_len[row]).tolist()):
            total[t] = total.get(t, 0.0) + weight * tf
    best = sorted(total.items(), key=lambda item: (-item[1], item[0]))[:n_terms]
    mass = sum(p for _, p in best) or 1.0
    return {index.vocab[t]: p / mass for t, p in best}


def expansion(index: BM25Index, terms: dict[str, float]) -> np.ndarray:
    """BM25 scores of a weighted query: sum of weight * the term's own BM25 score."""
    out = np.zeros(index.n_docs)
    for term, weight in terms.items():
        out += weight * index.scores([term])
    return out


def feedback_lists(corpus: Corpus, claims: Claims, depth: int, k: int = 10) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Source -> (each claim's first k rows, their first-pass scores): dense, BM25 and fused lists."""
    row_of = {d: i for i, d in enumerate(corpus.ids)}
    out = {}
    for name, matrix in (("dense", claims.dense), ("bm25", claims.bm25)):
        rows = np.stack([top_rows(s, k) for s in matrix])
        out[name] = (rows, np.take_along_axis(matrix, rows, axis=1))
    lists = [fused(corpus, claims.dense[i], claims.bm25[i], depth)[:k] for i in range(len(claims.questions))]
    out["fused"] = (np.array([[row_of[d] for d, _ in f] for f in lists]), np.array([[s for _, s in f] for f in lists]))
    return out


def rm3_scores(corpus: Corpus, claims: Claims, rows: np.ndarray, weights: np.ndarray, k: int, n_terms: int):
    """(original BM25 scaled to an L1-normalized query, the relevance model's BM25 scores), one row per claim."""
    original = claims.bm25 / np.array([[max(1, len(t))] for t in claims.tokens])
    terms = [relevance_model(corpus.bm25, r[:k], np.maximum(w[:k], 1e-9), n_terms) for r, w in zip(rows, weights)]
    return original, np.stack([expansion(corpus.bm25, t) for t in terms])


@dataclass
class Result:
    """One setting's per-claim metrics on both splits."""

    family: str
    setting: tuple | str
    train: np.ndarray
    test: np.ndarray


def sweep_family(family: str, settings: list, run: Callable[[str, object], np.ndarray]) -> list[Result]:
    """Every setting of a family on both splits."""
    return [Result(family, s, run("train", s), run("test", s)) for s in settings]


def sweep(args) -> None:
    """Default, then each family's train-best and tuned-on-test settings; per-claim changes against the default."""
    corpus = load_corpus()
    claims = {s: load_claims(corpus, s) for s in SPLITS}
    depth = args.candidates
    feedback = {s: feedback_lists(corpus, claims[s], depth) for s in SPLITS}
    default = {s: hybrid_scores(corpus, claims[s], claims[s].dense, claims[s].bm25, depth) for s in SPLITS}
    results = [Result("default", "BM25 + bge, min-max 0.5", default["train"], default["test"])]

    def dense_prf(source: str) -> Callable[[str, tuple], np.ndarray]:
        def run(split: str, setting: tuple) -> np.ndarray:
            c = claims[split]
            k, alpha = setting
            dense = rocchio_scores(corpus.vectors, c.vectors, feedback[split][source][0][:, :k], alpha)
            return hybrid_scores(corpus, c, dense, c.bm25, depth)
        return run

    results += sweep_family("Rocchio (dense top k)", ROCCHIO, dense_prf("dense"))
    results += sweep_family("Rocchio (fused top k)", ROCCHIO, dense_prf("fused"))
    cache: dict = {}

    def rm3(split: str, setting: tuple) -> np.ndarray:
        source, k, n_terms, weight = setting
        key = (split, source, k, n_terms)
        if key not in cache:
            cache[key] = rm3_scores(corpus, claims[split], *feedback[split][source], k, n_terms)
        original, expanded = cache[key]
        return hybrid_scores(corpus, claims[split], claims[split].dense, (1 - weight) * original + weight * expanded, depth)

    results += sweep_family("RM3 BM25", RM3, rm3)
    best = {f: max((r for r in results if r.family == f), key=lambda r: r.train[:, 0].mean()) for f in families(results)}
    combos = combined(best, claims, corpus, feedback, depth, cache)
    report(results + combos, default, len(claims["train"].questions), len(claims["test"].questions))


def families(results: list[Result]) -> list[str]:
    return list(dict.fromkeys(r.family for r in results))


def combined(best: dict[str, Result], claims, corpus, feedback, depth, cache) -> list[Result]:
    """Both channels with feedback: each Rocchio family's train-best with RM3's train-best."""
    source, k, n_terms, weight = best["RM3 BM25"].setting
    out = []
    for family in ("Rocchio (dense top k)", "Rocchio (fused top k)"):
        fb = "dense" if "dense" in family else "fused"
        fb_k, alpha = best[family].setting
        per_split = []
        for split in SPLITS:
            c = claims[split]
            original, expanded = cache.get((split, source, k, n_terms)) or rm3_scores(
                corpus, c, *feedback[split][source], k, n_terms)
            dense = rocchio_scores(corpus.vectors, c.vectors, feedback[split][fb][0][:, :fb_k], alpha)
            per_split.append(hybrid_scores(corpus, c, dense, (1 - weight) * original + weight * expanded, depth))
        out.append(Result(f"{family} + RM3", f"{best[family].setting} + {best['RM3 BM25'].setting}", *per_split))
    return out


def report(results: list[Result], default: dict[str, np.ndarray], n_train: int, n_test: int) -> None:
    """Markdown: default, each family's train-best and its tuned-on-test setting; claims better / worse on test."""
    rows = []
    for family in families(results):
        members = [r for r in results if r.family == family]
        chosen = max(members, key=lambda r: r.train[:, 0].mean())
        on_test = max(members, key=lambda r: r.test[:, 0].mean())
        shown = [(f"{family}: {chosen.setting}", chosen)] if len(members) == 1 else [
            (f"{family}: train-best {chosen.setting}", chosen), (f"{family}: tuned on test {on_test.setting}", on_test)]
        for label, r in shown:
            delta = r.test[:, 0] - default["test"][:, 0]
            rows.append([label, f"{r.train[:, 0].mean():.3f} / {r.train[:, 1].mean():.3f}",
                         f"{r.test[:, 0].mean():.3f} / {r.test[:, 1].mean():.3f}",
                         f"{int((delta > 1e-9).sum())} / {int((delta < -1e-9).sum())}"])
    print(f"SciFact nDCG@10 / recall@100, train {n_train} claims, test {n_test}; settings: Rocchio (k, alpha), "
          "RM3 (source, k, terms, lambda)")
    print(table(["setting", "train", "test", "test claims better / worse than default"], rows))
    for family in families(results)[1:]:
        top = sorted((r for r in results if r.family == family), key=lambda r: -r.train[:, 0].mean())[:5]
        print(f"top 5 on train, {family}: " + "; ".join(
            f"{r.setting} {r.train[:, 0].mean():.3f} -> test {r.test[:, 0].mean():.3f}" for r in top))


def bootstrap(delta: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% interval of the mean of paired per-claim differences, resampling claims."""
    means = np.random.default_rng(seed).choice(delta, (n, len(delta))).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def compare(args) -> None:
    """One Rocchio setting against the default on both splits: hybrid and dense alone, claims moved, interval."""
    corpus = load_corpus()
    rows = []
    for split in SPLITS:
        c = load_claims(corpus, split)
        feedback = np.stack([top_rows(s, args.k) for s in c.dense])
        moved = rocchio_scores(corpus.vectors, c.vectors, feedback, args.alpha)
        base = hybrid_scores(corpus, c, c.dense, c.bm25, args.candidates)
        prf = hybrid_scores(corpus, c, moved, c.bm25, args.candidates)
        alone = [scored(c, lambda i, m=m: ranking(corpus, m[i], 100)) for m in (c.dense, moved)]
        delta = prf[:, 0] - base[:, 0]
        lo, hi = bootstrap(delta)
        rows.append([split, f"{base[:, 0].mean():.3f} / {base[:, 1].mean():.3f}",
                     f"{prf[:, 0].mean():.3f} / {prf[:, 1].mean():.3f}", f"{delta.mean():+.3f} ({lo:+.3f} … {hi:+.3f})",
                     f"{int((delta > 1e-9).sum())} / {int((delta < -1e-9).sum())}",
                     f"{alone[0][:, 0].mean():.3f} -> {alone[1][:, 0].mean():.3f}"])
    print(f"SciFact, Rocchio k={args.k}, alpha={args.alpha}, {args.candidates} candidates a channel, nDCG@10 / recall@100:")
    print(table(["split", "default hybrid", "Rocchio hybrid", "Δ nDCG@10 (95% bootstrap)", "claims better / worse",
                 "dense alone, nDCG@10"], rows))


def three_way(args) -> None:
    """bench.scifact_sweep's train-chosen three-way fusion (z-score 0.4 BM25 + 0.4 bge + 0.2 e5) with Rocchio on the
    bge channel, or on both dense channels (each from its own top k); (k, alpha) chosen on train."""
    from bench.scifact_sweep import Fusion

    fusion = Fusion((0.4, 0.4, 0.2), "zscore")
    corpus = load_corpus()
    e5_vectors = abstract_vectors("e5", corpus.ids)
    grid = [(c, k, a / 10) for c in ("bge", "bge + e5") for k in range(1, 6) for a in (2, 4, 6, 8, 10)]
    results: dict[str, dict] = {}
    for split in SPLITS:
        c = load_claims(corpus, split)
        e5_queries = claim_vectors(split, [q.query for q in c.questions], "e5")
        e5 = e5_queries @ e5_vectors.T
        feedback = {"bge": np.stack([top_rows(s, 5) for s in c.dense]), "e5": np.stack([top_rows(s, 5) for s in e5])}

        def run(bge: np.ndarray, e5: np.ndarray, c: Claims = c) -> np.ndarray:
            return scored(c, lambda i: fusion.fused({"bm25": ranking(corpus, c.bm25[i], args.candidates, True),
                                                     "bge": ranking(corpus, bge[i], args.candidates),
                                                     "e5": ranking(corpus, e5[i], args.candidates)}))

        results[split] = {"none": run(c.dense, e5)}
        for channels, k, alpha in grid:
            bge = rocchio_scores(corpus.vectors, c.vectors, feedback["bge"][:, :k], alpha)
            e5_moved = rocchio_scores(e5_vectors, e5_queries, feedback["e5"][:, :k], alpha) if "e5" in channels else e5
            results[split][(channels, k, alpha)] = run(bge, e5_moved)
    rows = [["three-way, no feedback", *(f"{results[s]['none'][:, 0].mean():.3f}" for s in SPLITS), ""]]
    for channels in ("bge", "bge + e5"):
        members = [g for g in grid if g[0] == channels]
        for label, pick in (("train-best", "train"), ("tuned on test", "test")):
            chosen = max(members, key=lambda g, s=pick: results[s][g][:, 0].mean())
            delta = results["test"][chosen][:, 0] - results["test"]["none"][:, 0]
            lo, hi = bootstrap(delta)
            rows.append([f"Rocchio on {channels}, {label} (k, alpha) = {chosen[1:]}",
                         *(f"{results[s][chosen][:, 0].mean():.3f}" for s in SPLITS),
                         f"{delta.mean():+.3f} ({lo:+.3f} … {hi:+.3f})"])
    print(f"SciFact three-way fusion {fusion.name}, {args.candidates} candidates a channel, nDCG@10:")
    print(table(["setting", "train", "test", "test Δ vs no feedback (95% bootstrap)"], rows))


def main(argv: list[str] | None = None) -> None:
    """`embed` the claims, `sweep` the grids, `compare` the chosen setting, try it in the `three-way` fusion."""
    parser = argparse.ArgumentParser(prog="python -m bench.scifact_prf", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("embed")
    t = sub.add_parser("three-way")
    t.add_argument("--candidates", type=int, default=Settings().candidates)
    c = sub.add_parser("compare")
    c.add_argument("--candidates", type=int, default=Settings().candidates)
    c.add_argument("--k", type=int, default=2, help="Rocchio feedback abstracts")
    c.add_argument("--alpha", type=float, default=0.4)
    s = sub.add_parser("sweep")
    s.add_argument("--candidates", type=int, default=Settings().candidates, help="per channel before fusion")
    args = parser.parse_args(argv)
    if args.command == "embed":
        corpus = load_corpus()
        for split in SPLITS:
            load_claims(corpus, split)
    elif args.command == "sweep":
        sweep(args)
    elif args.command == "compare":
        compare(args)
    else:
        three_way(args)


if __name__ == "__main__":
    main()
