"""Store backends at scale: Milvus Lite vs files at 10k and 100k chunks (2k and 10k with --quick).

Chunks: the scaled corpus of bench.retrieval_latency (real llm-notes-zh + scifact chunks, perturbed
replicas, real jieba tokens); vectors: random unit 384-d (the store's cost does not depend on the
embedder). Each (backend, size) runs in its own process, so peak RSS is that backend's. Per run: one
write of every chunk through `Store.apply` (chunks/s, embedding excluded), reopening, reading the
manifest (all a no-change re-ingest reads from the store), and p50/p95 of dense, sparse and hybrid
(`Retriever.search_timed`: both rankings, fusion, prior and chunk lookups; query embedding excluded) over real dev questions, plus
recall@10 of the dense index against exact numpy search.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import corpus
from bench.common import REPO, pct, questions, quiet_libraries, table

DIM = 384
SIZES = {False: (10_000, 100_000), True: (2_000, 10_000)}
SCIFACT_DOCS = {False: 1500, True: 300}
N_QUESTIONS = 40
BACKENDS = ("files", "milvus")


def _vectors(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _batch(n: int, scifact_docs: int):
    from rag import store
    from rag.records import Chunk

    data = corpus.scaled(n, scifact_docs)
    chunks = [Chunk(f"c{i:07d}", f"d{i // 10}", t, f"/bench/{s}/{i // 10}.md") for i, (t, s) in enumerate(zip(data.texts, data.sources))]
    docs = [store.DocRecord(f"d{j}", f"/bench/{j}.md", f"doc {j}", " ".join(data.texts[j * 10:(j + 1) * 10]), f"sha{j}")
            for j in range((n + 9) // 10)]
    return store.Batch(docs, chunks, _vectors(n, 0), data.tokens, [1.0] * n)


def measure(backend: str, n: int, scifact_docs: int) -> dict:
    """One backend at one size, in this process."""
    from rag import store
    from rag.retrieve import Retriever
    from rag.settings import Settings
    from rag.text import TOKENIZER_VERSION, tokenize

    batch = _batch(n, scifact_docs)
    folder = Path(tempfile.mkdtemp(prefix=f"bench-{backend}-"))
    settings = Settings(index_dir=folder, kb="bench", store=backend, milvus_uri=str(folder / "kb.db"), embedder="bench")
    manifest = store.Manifest("bench", store.EmbedderInfo("bench", DIM, "", "", ""), store.Chunking(448, 48),
                              TOKENIZER_VERSION, "")
    out = {"backend": backend, "n": n}
    t = time.perf_counter()
    kb = store.open_store(settings, create=manifest)
    kb.apply(batch, set(), kb.manifest)
    out["write_s"] = time.perf_counter() - t
    t = time.perf_counter()
    kb = store.open_store(settings)
    out["open_s"] = time.perf_counter() - t
    t = time.perf_counter()
    store.peek_manifest(settings)
    out["manifest_s"] = time.perf_counter() - t
    out["dense_index"] = kb.manifest.dense
    texts = questions(N_QUESTIONS)
    embedder = corpus.embedder()
    retriever = Retriever(kb, embedder, settings)
    depth = settings.candidates
    ms = {"dense": [], "sparse": [], "hybrid": []}
    recall = []
    vectors, ids = np.asarray(batch.vectors), [c.id for c in batch.chunks]
    for i, (text, vec) in enumerate(zip(texts, embedder.encode_queries(texts))):
        t = time.perf_counter()
        dense = kb.search_dense(vec, depth)
        t_dense = time.perf_counter()
        kb.search_sparse(tokenize(text), depth)
        t_sparse = time.perf_counter()
        stages = retriever.search_timed(text, mode="hybrid").timings_ms
        if i >= 2:  # two warm-up queries
            ms["dense"].append((t_dense - t) * 1000)
            ms["sparse"].append((t_sparse - t_dense) * 1000)
            ms["hybrid"].append(sum(stages.get(s, 0.0) for s in ("dense", "bm25", "fuse")))
        exact = {ids[r] for r in np.argsort(-(vectors @ vec))[:10]}
        recall.append(len(exact & {c for c, _ in dense[:10]}) / 10)
    out["ms"] = {k: [pct(v, 50), pct(v, 95)] for k, v in ms.items()}
    out["recall10"] = float(np.mean(recall))
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _one(backend: str, n: int, scifact_docs: int) -> dict:
    """`measure` in a fresh process (its own peak RSS)."""
    cmd = [sys.executable, "-m", "bench.store_backends", "--one", backend, str(n), str(scifact_docs)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{backend} at {n:,} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(quick: bool) -> str:
    """Both backends at both sizes; the Markdown section."""
    results = [_one(b, n, SCIFACT_DOCS[quick]) for n in SIZES[quick] for b in BACKENDS]
    rows = []
    for r in results:
        rows.append([f"{r['n']:,}", r["backend"], r["dense_index"], f"{r['n'] / r['write_s']:,.0f}", r["open_s"],
                     r["manifest_s"] * 1000, *(f"{r['ms'][k][0]:.1f} / {r['ms'][k][1]:.1f}" for k in ("dense", "sparse", "hybrid")),
                     f"{r['recall10']:.3f}", f"{r['peak_rss_mib']:,.0f}"])
    return "\n\n".join([
        "## Store backends: files vs Milvus Lite",
        __doc__.split("\n", 2)[2].strip(),
        table(["chunks", "store", "dense index", "write chunks/s", "open s", "manifest read ms (no-change re-ingest)",
               "dense p50/p95 ms", "sparse p50/p95 ms", "hybrid p50/p95 ms", "dense recall@10 vs exact", "peak RSS MiB"], rows),
    ])


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.store_backends [--quick]`, or `--one BACKEND N SCIFACT_DOCS` (one JSON line)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--one", nargs=3, metavar=("BACKEND", "N", "SCIFACT_DOCS"))
    args = parser.parse_args(argv)
    quiet_libraries()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), int(args.one[2]))))
    else:
        print(run(args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
