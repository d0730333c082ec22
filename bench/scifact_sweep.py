"""SciFact at document level: three-way fusion (BM25 + bge + e5), then cross-encoder or ColBERT re-scoring,
weights chosen on the train claims and reported on the test claims.

    python -m bench.scifact_sweep fusion                                    # fusion grid, train -> test
    python -m bench.scifact_sweep cross --split test --max-tokens 512 --depth 30 [--three-way]
    python -m bench.scifact_sweep cross --split train --max-tokens 512 --depth 20 --limit 300
    python -m bench.scifact_sweep rerank --depths 20 [--three-way]          # cross-encoder / ColBERT, train -> test

Inputs (bench.scifact_docs): per split, the BM25 + bge set (test: scifact-docs-bge; train:
scifact-docs-train-bge) and the BM25 + e5 set (scifact-docs-e5, scifact-docs-train-e5). SciFact has
no dev split: the 809 train claims (disjoint from the 300 test claims) choose every weight here, and the
test figures are reported for that choice; the best test figure of each grid is printed too, marked
"tuned on test". Re-scoring ranks a fused list's top `depth` by w * model + (1 - w) * fused, both
min-max scaled over those candidates (w = 1: the model alone); the rest keeps the fused order.
Model scores are cached per (question, abstract): cross-encoder scores in `<set>.rerank-<tokens>.json`
(as bench.rerank_sweep, each pair scored alone), ColBERT MaxSim in `<set>.colbert.json`
(bench.late_interaction).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from bench.fusion_sweep import DEPTH, zscore
from bench.rankings import CACHE, Question, RankingSet, load, metrics
from rag import fuse

SETS = {"test": ("scifact-docs-bge", "scifact-docs-e5"), "train": ("scifact-docs-train-bge", "scifact-docs-train-e5")}
CHANNELS = ("bm25", "bge", "e5")
NORMALIZERS: dict[str, Callable] = {"minmax": fuse.minmax, "zscore": zscore}
INTERPOLATION = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 1.0)


@dataclass(frozen=True)
class Fusion:
    """Weights per channel (0 leaves a channel out) and the score normalization."""

    weights: tuple[float, float, float]  # bm25, bge, e5
    normalize: str = "minmax"

    @property
    def name(self) -> str:
        used = " + ".join(f"{w:.2g} {c}" for c, w in zip(CHANNELS, self.weights) if w > 0)
        return f"{used} ({self.normalize})"

    def fused(self, lists: dict[str, list[tuple[str, float]]]) -> list[tuple[str, float]]:
        """One question's fused ranking, best first."""
        used = [(dict(lists[c][:DEPTH]), w) for c, w in zip(CHANNELS, self.weights) if w > 0]
        return fuse.ranked(fuse.weighted([s for s, _ in used], [w for _, w in used], NORMALIZERS[self.normalize]))


DEFAULT = Fusion((0.5, 0.5, 0.0))  # the app today with bge: min-max, dense 0.5
THREE_WAY = Fusion((1 / 3, 1 / 3, 1 / 3))


@dataclass
class Split:
    """One split's questions (BM25 + bge set, judgements of both sets merged) and each one's three lists."""

    ranking_set: RankingSet
    lists: dict[str, dict[str, list[tuple[str, float]]]]  # question id -> channel -> ranking


def load_split(split: str, limit: int = 0) -> Split:
    """The split's BM25 + bge set, with the e5 set's lists and judgements joined on question id."""
    bge_name, e5_name = SETS[split]
    ranking_set = load(CACHE / f"{bge_name}.json")
    e5_path = CACHE / f"{e5_name}.json"  # not yet embedded: no e5 lists (fusions without e5 only)
    e5 = {q.id: q for q in load(e5_path).questions} if e5_path.is_file() else {}
    ranking_set.questions = ranking_set.questions[: limit or None]
    lists = {}
    for q in ranking_set.questions:
        if q.id in e5:
            other = e5[q.id]
            q.gain, q.doc, q.text = {**other.gain, **q.gain}, {**other.doc, **q.doc}, {**other.text, **q.text}
        lists[q.id] = {"bm25": q.bm25, "bge": q.dense, "e5": e5[q.id].dense if q.id in e5 else []}
    return Split(ranking_set, lists)


def evaluate(split: Split, ranked: Callable[[Question], list[str]]) -> dict[str, float]:
    """Mean nDCG@10 and recall@100 of a ranking function over a split."""
    rows = [metrics(split.ranking_set, q, ranked(q)) for q in split.ranking_set.questions]
    return {k: float(np.mean([r[k] for r in rows])) for k in ("ndcg@10", "recall@100")}


def fusion_keys(split: Split, fusion: Fusion) -> Callable[[Question], list[str]]:
    return lambda q: [k for k, _ in fusion.fused(split.lists[q.id])]


def grid() -> list[Fusion]:
    """Every weighting of the three channels in steps of 0.1 (each channel alone included), both normalizations."""
    steps = [i / 10 for i in range(11)]
    weights = [(b, d, round(1 - b - d, 1)) for b, d in itertools.product(steps, steps) if b + d <= 1.0 + 1e-9]
    return [Fusion(w, n) for n in NORMALIZERS for w in weights]


@functools.cache
def chosen_fusion() -> Fusion:
    """The fusion of the grid with the best train nDCG@10."""
    train = load_split("train")
    return max(grid(), key=lambda f: evaluate(train, fusion_keys(train, f))["ndcg@10"])


def candidate_lists(ranking_set: RankingSet, depth: int, three_way: bool) -> dict[str, list[str]]:
    """Question id -> keys to re-score: the default fusion's top `depth`, then (three_way) the train-chosen
    three-way fusion's top `depth` not already in it."""
    split = next(s for s, names in SETS.items() if ranking_set.name == names[0])
    joined = load_split(split)
    fusions = [DEFAULT, chosen_fusion()] if three_way else [DEFAULT]
    out = {}
    for q in ranking_set.questions:
        keys = [k for f in fusions for k, _ in f.fused(joined.lists[q.id])[:depth]]
        out[q.id] = list(dict.fromkeys(keys))
    return out


def run_fusion(args) -> None:
    """Each channel, the default, equal three-way weights, the train-best of the grid; train and test."""
    train, test = load_split("train"), load_split("test")
    results = {f: (evaluate(train, fusion_keys(train, f)), evaluate(test, fusion_keys(test, f))) for f in grid()}
    best_train = max(results, key=lambda f: results[f][0]["ndcg@10"])
    best_test = max(results, key=lambda f: results[f][1]["ndcg@10"])
    shown = [Fusion((1, 0, 0)), Fusion((0, 1, 0)), Fusion((0, 0, 1)), DEFAULT, Fusion((0.5, 0.5, 0), "zscore"),
             Fusion((0.5, 0, 0.5)), THREE_WAY, Fusion(THREE_WAY.weights, "zscore")]
    print(f"SciFact, nDCG@10 / recall@100; train {len(train.ranking_set.questions)} claims, test {len(test.ranking_set.questions)}")
    print(f"{'fusion':<44}{'train':>14}{'test':>14}")
    for label, f in [(f.name, f) for f in shown] + [(f"train-best: {best_train.name}", best_train),
                                                   (f"tuned on test: {best_test.name}", best_test)]:
        tr, te = results.get(f) or (evaluate(train, fusion_keys(train, f)), evaluate(test, fusion_keys(test, f)))
        print(f"{label:<44}{tr['ndcg@10']:>8.3f}{tr['recall@100']:>6.3f}{te['ndcg@10']:>8.3f}{te['recall@100']:>6.3f}")
    for normalize in NORMALIZERS:
        top = sorted((f for f in results if f.normalize == normalize), key=lambda f: -results[f][0]["ndcg@10"])[:5]
        print(f"top 5 on train, {normalize}: " + "; ".join(
            f"{f.weights} {results[f][0]['ndcg@10']:.3f} -> test {results[f][1]['ndcg@10']:.3f}" for f in top))


def cross_scores(split: str, max_tokens: int, depth: int, limit: int, three_way: bool) -> None:
    """Cross-encoder scores (each pair alone, as bench.rerank_job) for the candidates not yet in the cache."""
    from rag.rerank import bundled_reranker
    from rag.settings import load_settings

    ranking_set = load_split(split, limit).ranking_set
    path = CACHE / f"{ranking_set.name}.rerank-{max_tokens}.json"
    cache = json.loads(path.read_text()) if path.is_file() else {}
    settings = load_settings(None).model_copy(update={"rerank_max_tokens": max_tokens, "rerank_batch_size": 1})
    reranker = bundled_reranker(settings)
    wanted = candidate_lists(ranking_set, depth, three_way)
    by_id = {q.id: q for q in ranking_set.questions}
    todo = [(qid, k) for qid, keys in wanted.items() for k in keys if k not in cache.get(qid, {})]
    for n, (qid, k) in enumerate(tqdm(todo, desc=f"{ranking_set.name} cross-encoder {max_tokens} tokens"), 1):
        cache.setdefault(qid, {})[k] = reranker.scores(by_id[qid].query, [by_id[qid].text[k]])[0]
        if n % 2000 == 0 or n == len(todo):
            path.write_text(json.dumps(cache))


def rescored(fused: list[tuple[str, float]], scores: dict[str, float], depth: int, w: float) -> list[str]:
    """The fused top `depth` ordered by w * model + (1 - w) * fused (both min-max over them), then the rest."""
    head = [(k, s) for k, s in fused[:depth] if k in scores]
    model = fuse.minmax({k: scores[k] for k, _ in head})
    base = fuse.minmax(dict(head))
    order = sorted(head, key=lambda item: -(w * model[item[0]] + (1 - w) * base[item[0]]))
    return [k for k, _ in order] + [k for k, _ in fused if k not in model]


def model_scores(split: Split) -> dict[str, dict[str, dict[str, float]]]:
    """Re-scoring channel name -> question id -> {key: score}, for every cache this split has."""
    from bench.late_interaction import VARIANTS

    name = split.ranking_set.name
    out = {}
    for path in sorted(CACHE.glob(f"{name}.rerank-*.json")):
        out[f"cross-encoder {path.stem.rsplit('-', 1)[1]} tok"] = json.loads(path.read_text())
    colbert = CACHE / f"{name}.colbert.json"
    if colbert.is_file():
        cached = json.loads(colbert.read_text())["scores"]
        for i, variant in enumerate(VARIANTS):
            out[f"colbert {variant}"] = {qid: {k: s[i] for k, s in by_key.items()} for qid, by_key in cached.items()}
    return out


def rescored_ndcg(split: Split, questions: list[Question], fusion: Fusion, scores: dict, depth: int, w: float) -> float:
    """nDCG@10 over `questions` of the fusion's list re-scored at share w."""
    part = Split(RankingSet(split.ranking_set.name, True, questions), split.lists)
    return evaluate(part, lambda q: rescored(fusion.fused(split.lists[q.id]), scores.get(q.id, {}), depth, w))["ndcg@10"]


def run_rerank(args) -> None:
    """For each fusion, re-scoring channel and depth: model alone, the train-chosen w, test at that w."""
    train, test = load_split("train"), load_split("test")
    train_scores, test_scores = model_scores(train), model_scores(test)
    print("SciFact nDCG@10 (recall@100 unchanged by re-scoring); w = model share; train -> test")
    depths = [int(d) for d in args.depths.split(",")]
    fusions = [DEFAULT, chosen_fusion()] if args.three_way else [DEFAULT]
    for fusion, channel, depth in itertools.product(fusions, sorted(test_scores), depths):
        covered = [q for q in test.ranking_set.questions if q.id in test_scores[channel]]
        test_by_w = {w: rescored_ndcg(test, covered, fusion, test_scores[channel], depth, w) for w in INTERPOLATION}
        base = rescored_ndcg(test, covered, fusion, {}, depth, 0.0)
        line = f"{fusion.name:<36} {channel:<22} top {depth:<3} test {len(covered)}: fused {base:.3f}, alone {test_by_w[1.0]:.3f}"
        trained = [q for q in train.ranking_set.questions if q.id in train_scores.get(channel, {})]
        if trained:
            by_w = {w: rescored_ndcg(train, trained, fusion, train_scores[channel], depth, w) for w in INTERPOLATION}
            w = max(by_w, key=by_w.get)
            line += f"; train {len(trained)} picks w={w} ({by_w[w]:.3f}) -> test {test_by_w[w]:.3f}"
        w = max(test_by_w, key=test_by_w.get)
        print(line + f"; tuned on test: w={w} {test_by_w[w]:.3f}")


def main(argv: list[str] | None = None) -> None:
    """`fusion` grid, `cross` scores, `rerank` sweep."""
    parser = argparse.ArgumentParser(prog="python -m bench.scifact_sweep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fusion")
    c = sub.add_parser("cross")
    c.add_argument("--split", default="test", choices=sorted(SETS))
    c.add_argument("--max-tokens", type=int, default=512)
    c.add_argument("--depth", type=int, default=30)
    c.add_argument("--limit", type=int, default=0, help="only the first N questions")
    c.add_argument("--three-way", action="store_true", help="also the train-chosen fusion's candidates")
    r = sub.add_parser("rerank")
    r.add_argument("--depths", default="20,30")
    r.add_argument("--three-way", action="store_true", help="also re-score the train-chosen fusion")
    args = parser.parse_args(argv)
    if args.command == "fusion":
        run_fusion(args)
    elif args.command == "cross":
        cross_scores(args.split, args.max_tokens, args.depth, args.limit, args.three_way)
    else:
        run_rerank(args)


if __name__ == "__main__":
    main()
