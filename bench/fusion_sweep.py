"""Fusion sweep: retrieve each question once per channel (cached), then score many fusion settings.

    python -m bench.fusion_sweep collect --name dev --kb notes --qa data/qa/llm-notes-zh.dev.jsonl
    python -m bench.fusion_sweep collect --name cmrc --kb cmrc --qa eval-out/cmrc/qa.jsonl --limit 400
    python -m bench.fusion_sweep collect --name scifact --beir ../shared/datasets/scifact
    python -m bench.fusion_sweep collect --name scifact-titles --beir ../shared/datasets/scifact --titles 300
    python -m bench.fusion_sweep collect --name cmrc-titles --kb cmrc --corpus eval-out/cmrc/corpus.jsonl --titles 100
    python -m bench.fusion_sweep collect --name dev-sentences --kb notes --sentences 200
    python -m bench.fusion_sweep sweep dev cmrc scifact scifact-titles

`collect` stores both channels' top 100 with every candidate judged (bench/rankings.py), so `sweep`
needs no model: it prints hit@1 / MRR@10 / nDCG@10 per set for each fusion setting, and for each
setting the worst margin over the sets between hybrid and its better channel (the fusion must not
fall below the channel it fuses).
"""

from __future__ import annotations

import argparse
import copy
import random
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path

import numpy as np

from bench.rankings import CACHE, RankingSet, collect, load, metrics, save
from rag import fuse
from rag.text import language

DEPTH = 50  # candidates per channel, as in the app
KEYS = ("hit@1", "mrr@10", "ndcg@10", "recall@100")
MIN_PART = 10  # a language part of a set is reported from this many questions
Fusion = Callable[[list[tuple[str, float]], list[tuple[str, float]], str], dict[str, float]]


def title_items(corpus: Path, n: int, seed: int = 0):
    """Pseudo-queries from another domain: a title finds the documents under it (n titles drawn at random)."""
    import json

    from rag.eval.qa import QAItem

    by_title: dict[str, list[str]] = {}
    for line in corpus.open(encoding="utf-8"):
        doc = json.loads(line)
        if len(doc.get("title", "").strip()) >= 2:
            by_title.setdefault(doc["title"].strip(), []).append(str(doc["_id"]))
    titles = random.Random(seed).sample(sorted(by_title), min(n, len(by_title)))
    items = [QAItem(id=f"title-{i}", question=t, doc_ids=by_title[t]) for i, t in enumerate(titles)]
    return items, {i.id: dict.fromkeys(i.doc_ids, 1) for i in items}


def sentence_items(documents: dict, n: int, seed: int = 0):
    """Pseudo-queries from a knowledge base itself: a sentence (20-150 characters) finds the chunk holding it."""
    import re

    from rag.eval.qa import QAItem

    sentences = sorted({s.strip() for record in documents.values() for s in re.split(r"(?<=[。！？.!?])\s*", record.text)
                        if 20 <= len(s.strip()) <= 150})
    picked = random.Random(seed).sample(sentences, min(n, len(sentences)))
    return [QAItem(id=f"sentence-{i}", question=s, evidence=[s]) for i, s in enumerate(picked)]


def run_collect(args) -> None:
    """Retrieve and judge one set, write it under eval-out/rankings/."""
    from rag.eval.datasets import load_beir
    from rag.eval.qa import load_qa
    from rag.retrieve import open_retriever
    from rag.settings import load_settings

    kb = args.kb or f"beir-{args.beir.resolve().name}"
    retriever = open_retriever(load_settings(None, kb=kb, index_dir=args.index_dir, embedder=args.embedder))
    if args.sentences:
        items, qrels = sentence_items(retriever.state.documents, args.sentences), None
    elif args.titles:
        items, qrels = title_items(args.corpus or args.beir / "corpus.jsonl", args.titles)
    elif args.beir:
        items, qrels = load_beir(args.beir, args.split)
    else:
        items, qrels = load_qa(args.qa), None
    items = items[: args.limit or None]
    save(collect(args.name, retriever, items, qrels), CACHE / f"{args.name}.json")


def zscore(scores: dict[str, float]) -> dict[str, float]:
    """Standardize scores over the list, shifted so the list's minimum is 0 (a flat list stays near 0)."""
    if not scores:
        return {}
    values = list(scores.values())
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5 or 1.0
    lo = min(values)
    return {row: (s - lo) / std for row, s in scores.items()}


def margin(ranking: list[tuple[str, float]], n: int = 10) -> float:
    """How far the top hit stands out: (top - second) / (top - n-th), 0 for a flat or short list."""
    scores = [s for _, s in ranking[:n]]
    if len(scores) < 3 or scores[0] <= scores[-1]:
        return 0.0
    return (scores[0] - scores[1]) / (scores[0] - scores[-1])


def margin_weights(rankings: list[list[tuple[str, float]]]) -> tuple[float, ...]:
    """Per-query channel weights in proportion to each ranking's top margin (equal when all are flat)."""
    margins = [margin(r) for r in rankings]
    total = sum(margins)
    return tuple(m / total if total > 0 else 1 / len(rankings) for m in margins)


def run_import(args) -> None:
    """Sets `<name>-bge`: each set's questions with bge-small-en's dense lists from a bench.rerank_job output
    folder (BM25 lists and judgements kept), and the job's cross-encoder scores copied into the cache."""
    import json
    import shutil

    from bench.rankings import with_dense
    from rag.eval.datasets import load_beir
    from rag.retrieve import open_retriever
    from rag.settings import load_settings

    store = open_retriever(load_settings(None, kb=f"beir-{args.beir.resolve().name}")).state
    bge = json.loads((args.job_out / "bge.json").read_text())
    for name, dense in bge.items():
        ranking_set = load(CACHE / f"{name}.json")
        qrels = title_items(args.beir / "corpus.jsonl", args.titles)[1] if "titles" in name else load_beir(args.beir, "test")[1]
        save(with_dense(ranking_set, f"{name}-bge", dense, store, qrels), CACHE / f"{name}-bge.json")
    for scores in args.job_out.glob("*.rerank-*.json"):
        set_name, suffix = scores.name.split(".", 1)
        shutil.copyfile(scores, CACHE / scores.name)
        if set_name in bge:
            shutil.copyfile(scores, CACHE / f"{set_name}-bge.{suffix}")


corpus_language: ContextVar[str] = ContextVar("corpus_language", default="zh")


def score(ranking_set: RankingSet, fusion: Fusion, depth: int = DEPTH) -> dict[str, float]:
    """Mean metrics of one fusion over a set (chunk prior applied as in the app)."""
    texts = [t[:200] for q in ranking_set.questions[:20] for t in list(q.text.values())[:10]]
    corpus_language.set(language("".join(texts)))
    rows = []
    for q in ranking_set.questions:
        fused = fusion(q.dense[:depth], q.bm25[:depth], q.query)
        fused = {k: s * q.prior.get(k, 1.0) if s > 0 else s for k, s in fused.items()}
        rows.append(metrics(ranking_set, q, [k for k, _ in fuse.ranked(fused)]))
    return {k: float(np.mean([r[k] for r in rows])) for k in KEYS}


def with_subsets(sets: list[RankingSet]) -> list[RankingSet]:
    """Each set, plus its per-language parts when it mixes Chinese and English questions."""
    out = []
    for ranking_set in sets:
        out.append(ranking_set)
        by_lang: dict[str, list] = {}
        for q in ranking_set.questions:
            by_lang.setdefault(language(q.query), []).append(q)
        if len(by_lang) > 1:
            for lang, questions in sorted(by_lang.items()):
                if len(questions) < MIN_PART:
                    continue
                part = copy.copy(ranking_set)
                part.name, part.questions = f"{ranking_set.name}-{lang}", questions
                out.append(part)
    return out


def fusions() -> dict[str, Fusion]:
    """The settings compared: each channel alone, RRF, min-max weighted, z-score weighted, per-query weights."""
    grid: dict[str, Fusion] = {
        "dense": lambda d, b, q: dict(d),
        "bm25": lambda d, b, q: dict(b),
    }
    for k in (5, 20, 60):
        grid[f"rrf k={k}"] = lambda d, b, q, k=k: fuse.rrf([[r for r, _ in d], [r for r, _ in b]], k=k)
    for w in (0.4, 0.5, 0.6, 0.7):
        grid[f"minmax dense={w}"] = lambda d, b, q, w=w: fuse.weighted([dict(d), dict(b)], [w, 1 - w])
    for w in (0.5, 0.6):
        grid[f"zscore dense={w}"] = lambda d, b, q, w=w: fuse.weighted([dict(d), dict(b)], [w, 1 - w], zscore)
    grid["minmax, per-query margin"] = lambda d, b, q: fuse.weighted(
        [dict(d), dict(b)], list(margin_weights([d, b])))
    for w in (0.6, 0.7, 0.8):  # query language: a question in another language than the KB's leans on dense
        grid[f"minmax .5, cross-lingual {w}"] = lambda d, b, q, w=w: fuse.weighted(
            [dict(d), dict(b)], [w, 1 - w] if language(q) != corpus_language.get() else [0.5, 0.5])
    return grid


def run_sweep(args) -> None:
    """Score every fusion on every cached set; print one table and the worst margin per fusion."""
    sets = with_subsets([load(CACHE / f"{name}.json") for name in args.names])
    results = {name: [score(s, fusion, args.depth) for s in sets] for name, fusion in fusions().items()}
    print(f"depth {args.depth} per channel; per set: hit@1 / MRR@10 / nDCG@10 (recall@100 for BEIR sets)")
    print(f"{'fusion':<26}" + "".join(f"{s.name + f' ({len(s.questions)})':>26}" for s in sets) + "   worst Δ hit@1 / MRR")
    for name, rows in results.items():
        cells = "".join(f"{r['hit@1']:>8.3f}{r['mrr@10']:>6.3f}{r['ndcg@10']:>6.3f}" + (f"{r['recall@100']:>6.3f}" if s.doc_level else " " * 6)
                        for r, s in zip(rows, sets))
        worst = ""
        if name not in ("dense", "bm25"):
            best = [{k: max(d[k], b[k]) for k in KEYS} for d, b in zip(results["dense"], results["bm25"])]
            worst = f"   {min(r['hit@1'] - m['hit@1'] for r, m in zip(rows, best)):+.3f} / {min(r['mrr@10'] - m['mrr@10'] for r, m in zip(rows, best)):+.3f}"
        print(f"{name:<26}{cells}{worst}")


def main(argv: list[str] | None = None) -> None:
    """`collect` one set, or `sweep` cached sets."""
    parser = argparse.ArgumentParser(prog="python -m bench.fusion_sweep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--name", required=True)
    c.add_argument("--kb")
    c.add_argument("--index-dir")
    c.add_argument("--embedder", help="default: settings.embedder (must match the knowledge base's)")
    c.add_argument("--qa", type=Path)
    c.add_argument("--beir", type=Path)
    c.add_argument("--split", default="test")
    c.add_argument("--titles", type=int, default=0, help="pseudo-queries: N titles of the corpus (--corpus or the BEIR folder's)")
    c.add_argument("--corpus", type=Path, help="a corpus.jsonl with _id and title (the one the knowledge base was built from)")
    c.add_argument("--sentences", type=int, default=0, help="pseudo-queries: N sentences of the knowledge base")
    c.add_argument("--limit", type=int, default=0, help="only the first N questions")
    i = sub.add_parser("import", help="read a bench.rerank_job output folder")
    i.add_argument("job_out", type=Path)
    i.add_argument("--beir", type=Path, required=True)
    i.add_argument("--titles", type=int, default=300)
    s = sub.add_parser("sweep")
    s.add_argument("names", nargs="+")
    s.add_argument("--depth", type=int, default=DEPTH)
    args = parser.parse_args(argv)
    {"collect": run_collect, "import": run_import, "sweep": run_sweep}[args.command](args)


if __name__ == "__main__":
    main()
