"""Model scores for cached rankings in one batch job that needs only numpy, onnxruntime and tokenizers.

    python -m bench.rerank_job export dev scifact scifact-titles --bge scifact --bge-only scifact-titles --out eval-out/job.json.gz
    python -m bench.rerank_job score eval-out/job.json.gz --models DIR --max-tokens 128,256,512 --out DIR

`export` writes, for each set, every question and the union of its dense and BM25 candidates (top 50
each); with `--bge SET` also every chunk text of that set's knowledge base. `score` then (1) embeds
those chunks and the questions with the bundled bge-small-en (int8) and keeps each question's top 100
by cosine, and (2) scores every (question, candidate) pair with the bundled cross-encoder, each pair
on its own (batch 1: an int8 dynamically quantized graph scales activations per batch, so a pair's
score then does not depend on its neighbours). Work is split over processes, one thread each. The
output files are bench.rerank_sweep's caches, so a machine with more cores can compute them.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

DEPTH = 50
BGE_DEPTH = 100
BGE_QUERY_PREFIX = "Represent this sentence for searching relevant passages: "


def export(names: list[str], bge: list[str], bge_only: list[str], out: Path) -> None:
    """Write {"sets": {name: [{id, query, keys}]}, "chunks": {name: {key: text}}, "bge": [...], "bge_only": [...]}."""
    from bench.rankings import CACHE, load

    job: dict = {"sets": {}, "chunks": {}, "bge": bge + bge_only, "bge_only": bge_only}
    for name in names:
        ranking_set = load(CACHE / f"{name}.json")
        texts = job["chunks"].setdefault(name, {})
        job["sets"][name] = []
        for q in ranking_set.questions:
            keys = list(dict.fromkeys([k for k, _ in q.dense[:DEPTH]] + [k for k, _ in q.bm25[:DEPTH]]))
            texts.update({k: q.text[k] for k in keys})
            job["sets"][name].append({"id": q.id, "query": q.query, "keys": keys})
    for name in bge:  # every chunk, for a dense ranking over the whole knowledge base
        job["chunks"][name].update(all_chunks(name))
    out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(out, "wt", encoding="utf-8") as fh:
        json.dump(job, fh, ensure_ascii=False)


def all_chunks(name: str) -> dict[str, str]:
    """Every chunk of the knowledge base a ranking set was collected from (its name: beir-<set>)."""
    if name == "scifact-docs":  # no index: whole abstracts
        from bench.scifact_docs import abstracts

        return abstracts()
    from rag.retrieve import open_retriever
    from rag.settings import load_settings

    store = open_retriever(load_settings(None, kb=f"beir-{name.split('-')[0]}")).state
    return {c.id: c.text for c in store.state.chunks}  # the files backend's loaded version


_worker = None


def _init(folder: str, kind: str, max_tokens: int) -> None:
    global _worker
    from rag.onnx_models import OnnxCrossEncoder, OnnxEncoder

    cls = OnnxCrossEncoder if kind == "cross" else OnnxEncoder
    _worker = cls(Path(folder), threads=1, batch_size=1 if kind == "cross" else 32, max_tokens=max_tokens)


def _cross(pair: tuple[str, str]) -> float:
    return _worker.scores(pair[0], [pair[1]])[0]


def _encode(texts: list[str]):
    return _worker.encode(texts)


def bge_rankings(job: dict, folder: Path, procs: int) -> dict[str, dict[str, list]]:
    """{set: {question id: [(key, cosine), ...top 100]}} over all chunks of each --bge set."""
    import numpy as np

    out, embedded = {}, {}  # sets over the same knowledge base share its chunk vectors
    for name in job["bge"]:
        keys = sorted(job["chunks"][name])
        texts = [job["chunks"][name][k] for k in keys]
        queries = [BGE_QUERY_PREFIX + q["query"] for q in job["sets"][name]]
        batches = [] if tuple(keys) in embedded else [texts[i:i + 64] for i in range(0, len(texts), 64)]
        with ProcessPoolExecutor(procs, initializer=_init, initargs=(str(folder), "encode", 512)) as pool:
            parts = list(pool.map(_encode, batches + [queries]))
        docs = embedded.setdefault(tuple(keys), np.concatenate(parts[:-1]) if batches else None)
        qv = parts[-1]
        sims = qv @ docs.T
        out[name] = {}
        for q, row in zip(job["sets"][name], sims):
            top = np.argsort(-row)[:BGE_DEPTH]
            out[name][q["id"]] = [(keys[i], float(row[i])) for i in top]
            q["keys"] = list(dict.fromkeys(q["keys"] + [keys[i] for i in top[:DEPTH]]))
        print(f"{name}: bge-small-en embedded {len(keys)} chunks and {len(queries)} questions", flush=True)
    return out


def cross_scores(job: dict, folder: Path, tokens: int, procs: int) -> dict[str, dict[str, dict[str, float]]]:
    """{set: {question id: {key: score}}} for every exported pair."""
    out = {}
    with ProcessPoolExecutor(procs, initializer=_init, initargs=(str(folder), "cross", tokens)) as pool:
        for name, questions in job["sets"].items():
            if name in job["bge_only"]:
                continue
            pairs = [(q["query"], job["chunks"][name][k]) for q in questions for k in q["keys"]]
            flat = iter(pool.map(_cross, pairs, chunksize=64))
            out[name] = {q["id"]: {k: next(flat) for k in q["keys"]} for q in questions}
            print(f"{name}: {len(pairs)} pairs scored at {tokens} tokens", flush=True)
    return out


def score(job_path: Path, models: Path, max_tokens: list[int], out: Path) -> None:
    """bge rankings (when asked) and cross-encoder scores, one JSON per (set, max tokens)."""
    with gzip.open(job_path, "rt", encoding="utf-8") as fh:
        job = json.load(fh)
    out.mkdir(parents=True, exist_ok=True)
    procs = os.cpu_count() or 1
    if job["bge"]:
        rankings = bge_rankings(job, models / "bge-small-en-v1.5-int8", procs)
        (out / "bge.json").write_text(json.dumps(rankings))
    for tokens in max_tokens:
        scores = cross_scores(job, models / "ms-marco-MiniLM-L-12-v2-int8", tokens, procs)
        for name, by_question in scores.items():
            (out / f"{name}.rerank-{tokens}.json").write_text(json.dumps(by_question))


def main(argv: list[str] | None = None) -> None:
    """`export` candidate lists, or `score` them."""
    parser = argparse.ArgumentParser(prog="python -m bench.rerank_job", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export")
    e.add_argument("names", nargs="+")
    e.add_argument("--bge", nargs="*", default=[], help="sets whose whole knowledge base bge-small-en ranks")
    e.add_argument("--bge-only", nargs="*", default=[], help="as --bge, without cross-encoder scores")
    e.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("score")
    s.add_argument("job", type=Path)
    s.add_argument("--models", type=Path, required=True, help="folder holding the provisioned ONNX model folders")
    s.add_argument("--max-tokens", default="256")
    s.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "export":
        export(args.names, args.bge, args.bge_only, args.out)
    else:
        score(args.job, args.models, [int(t) for t in args.max_tokens.split(",")], args.out)


if __name__ == "__main__":
    main()
