"""SciFact at document level without an index: BM25 (the app's tokenizer and BM25) over whole abstracts,
as cached rankings that bench.rerank_job extends with bge-small-en's dense lists and cross-encoder scores.

    python -m bench.scifact_docs collect            # eval-out/rankings/scifact-docs.json (BM25 only)
    python -m bench.rerank_job export scifact-docs --bge scifact-docs --out .gpu/job.json.gz
    python -m bench.scifact_docs import DIR          # the job's output: scifact-docs-bge.json + rerank caches
    python -m bench.scifact_docs collect --split train                 # scifact-docs-train.json (809 claims)
    python -m bench.scifact_docs dense e5 --split test                 # scifact-docs-e5.json, embedded here
    python -m bench.scifact_docs dense bge --split train               # scifact-docs-train-bge.json

`dense` embeds every abstract once per model (vectors kept under eval-out/vectors/) with the app's
embedder (`load_embedder`, its own prefixes), and adds that model's top 100 to a split's BM25 lists.
The train split (809 claims, disjoint from test) is for choosing weights; test is for reporting them.

Each abstract is one unit (title + text, as BEIR scores documents); the app's index splits a third of
them into chunks, so these figures compare models, not the app's index.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from bench.common import SCIFACT
from bench.rankings import CACHE, DEPTH, Question, RankingSet, load, save

NAME = "scifact-docs"
VECTORS = Path("eval-out/vectors")
EMBEDDERS = {"e5": "bundled:multilingual-e5-small", "bge": "bundled:bge-small-en-v1.5"}


def set_name(split: str) -> str:
    """The BM25 set of a split: scifact-docs (test, as before) or scifact-docs-<split>."""
    return NAME if split == "test" else f"{NAME}-{split}"


def abstracts() -> dict[str, str]:
    """SciFact document id -> title + text."""
    with SCIFACT.open(encoding="utf-8") as fh:
        return {str(d["_id"]): f"{d['title']}\n{d['text']}" for d in map(json.loads, fh)}


def collect(split: str = "test") -> RankingSet:
    """BM25 top 100 of each claim of a split, judged by the qrels."""
    from rag.bm25 import BM25Index
    from rag.eval.datasets import load_beir
    from rag.text import normalize, tokenize

    docs = abstracts()
    ids = list(docs)
    index = BM25Index.from_tokens([tokenize(normalize(docs[i])) for i in ids])
    items, qrels = load_beir(SCIFACT.parent, split)
    questions = []
    for item in items:
        rows, scores = index.top_k(tokenize(normalize(item.question)), DEPTH)
        bm25 = [(ids[r], float(s)) for r, s in zip(rows.tolist(), scores.tolist())]
        judged = qrels.get(item.id, {})
        keys = [k for k, _ in bm25]
        questions.append(Question(
            id=item.id, query=item.question, dense=[], bm25=bm25, gain={k: float(judged.get(k, 0)) for k in keys},
            doc={k: k for k in keys}, prior={}, ideal=[float(g) for g in judged.values() if g > 0],
            text={k: docs[k] for k in keys}))
    return RankingSet(set_name(split), True, questions)


def abstract_vectors(model: str, ids: list[str], docs: dict[str, str]):
    """(embedder, one normalized vector per abstract in `ids` order), embedded once and kept as .npy."""
    import numpy as np

    from rag.embed import load_embedder
    from rag.settings import load_settings

    embedder = load_embedder(load_settings(None, embedder=EMBEDDERS[model]))
    path = VECTORS / f"scifact-{model}.npy"
    if path.is_file():
        return embedder, np.load(path)
    vectors = embedder.encode_passages([docs[i] for i in ids], batch_size=16, progress=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return embedder, vectors


def add_dense(model: str, split: str) -> RankingSet:
    """A split's BM25 set with `model`'s top 100 abstracts by cosine as its dense lists."""
    import numpy as np

    from rag.eval.datasets import load_beir

    docs = abstracts()
    ids = sorted(docs)
    embedder, vectors = abstract_vectors(model, ids, docs)
    _, qrels = load_beir(SCIFACT.parent, split)
    base = load(CACHE / f"{set_name(split)}.json")
    sims = embedder.encode_queries([q.query for q in base.questions]) @ vectors.T
    for q, row in zip(base.questions, sims):
        top = np.argsort(-row)[:DEPTH]
        q.dense = [(ids[i], float(row[i])) for i in top]
        for k, _ in q.dense:
            q.gain.setdefault(k, float(qrels.get(q.id, {}).get(k, 0)))
            q.doc[k], q.text[k] = k, docs[k]
    return RankingSet(f"{set_name(split)}-{model}", True, base.questions)


def import_job(job_out: Path) -> None:
    """Add bge-small-en's lists (set scifact-docs-bge) and copy the job's cross-encoder scores into the cache."""
    from rag.eval.datasets import load_beir

    docs = abstracts()
    _, qrels = load_beir(SCIFACT.parent, "test")
    base = load(CACHE / f"{NAME}.json")
    dense = json.loads((job_out / "bge.json").read_text())[NAME]
    for q in base.questions:
        q.dense = [(k, float(s)) for k, s in dense[q.id]]
        for k, _ in q.dense:
            q.gain.setdefault(k, float(qrels.get(q.id, {}).get(k, 0)))
            q.doc[k], q.text[k] = k, docs[k]
    save(RankingSet(f"{NAME}-bge", True, base.questions), CACHE / f"{NAME}-bge.json")
    for scores in job_out.glob("*.rerank-*.json"):  # other sets' scores are copied as they are
        shutil.copyfile(scores, CACHE / scores.name.replace(f"{NAME}.", f"{NAME}-bge.", 1))


def main(argv: list[str] | None = None) -> None:
    """`collect` BM25 lists, add a `dense` channel embedded here, or `import` a job's output folder."""
    parser = argparse.ArgumentParser(prog="python -m bench.scifact_docs", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--split", default="test", choices=("test", "train"))
    d = sub.add_parser("dense")
    d.add_argument("model", choices=sorted(EMBEDDERS))
    d.add_argument("--split", default="test", choices=("test", "train"))
    i = sub.add_parser("import")
    i.add_argument("job_out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "collect":
        save(collect(args.split), CACHE / f"{set_name(args.split)}.json")
    elif args.command == "dense":
        ranking_set = add_dense(args.model, args.split)
        save(ranking_set, CACHE / f"{ranking_set.name}.json")
    else:
        import_job(args.job_out)


if __name__ == "__main__":
    main()
