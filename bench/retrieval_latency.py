"""Retrieval latency per stage (query embedding, dense FAISS, BM25, fusion) at two corpus sizes,
plus a 1M-chunk extrapolation on paper.

Chunks are real llm-notes-zh and scifact chunks replicated with perturbation (bench.corpus), BM25
runs over their real jieba tokens, FAISS over random L2-normalized vectors (the embedding values do
not change FAISS' cost), and queries are real dev-set questions embedded by the real embedder.
Every query goes through `rag.retrieve.Retriever.search` in hybrid mode, exactly as the app runs it.
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import contextmanager

import numpy as np

from bench import corpus
from bench.common import mib, module_main, pct, questions, table

STAGES = ("embed", "dense", "bm25", "fuse")
SIZES = {False: (10_000, 100_000), True: (2_000, 10_000)}
N_QUESTIONS = {False: 60, True: 15}
SCIFACT_DOCS = {False: 1500, True: 300}
TARGET = 1_000_000
DIM = 384


def random_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    """`n` random unit vectors (float32)."""
    vecs = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs


def bm25_bytes(bm25) -> tuple[int, int]:
    """(bytes of the numpy arrays, approximate bytes of the Python vocabulary list + dict)."""
    arrays = sum(v.nbytes for v in vars(bm25).values() if isinstance(v, np.ndarray))
    vocab = sys.getsizeof(bm25.vocab) + sys.getsizeof(bm25.term_index) + sum(sys.getsizeof(t) for t in bm25.vocab)
    return arrays, vocab


def hnsw_link_bytes(index) -> int:
    """Bytes of an HNSW graph's neighbour lists, levels and offsets."""
    h = index.hnsw
    return 4 * h.neighbors.size() + 4 * h.levels.size() + 8 * h.offsets.size()


def build_state(texts: list[str], tokens: list[list[str]], dense):
    """A files store over the scaled chunks, in memory (no documents: the retriever does not read them)."""
    from rag.bm25 import BM25Index
    from rag.records import Chunk
    from rag.store import Chunking, EmbedderInfo, Manifest
    from rag.stores.files import FilesStore, KBState

    chunks = [Chunk(id=f"c{i}", doc_id=f"d{i}", text=t, source="bench") for i, t in enumerate(texts)]
    manifest = Manifest("bench", EmbedderInfo("bench", DIM, "", "", ""), Chunking(0, 0), "", "")
    state = KBState(manifest, chunks, {}, dense, BM25Index.from_tokens(tokens), np.ones(len(chunks), np.float32))
    return FilesStore(".", "bench", state, hnsw_threshold=1 << 30)


def time_queries(retriever, qs: list[str]) -> dict[str, list[float]]:
    """Per-stage and total ms for each query through the retriever (after two warm-up queries)."""
    for q in qs[:2]:
        retriever.search(q, mode="hybrid")
    out: dict[str, list[float]] = {s: [] for s in (*STAGES, "total")}
    for q in qs:
        t = time.perf_counter()
        timings = retriever.search_timed(q, mode="hybrid").timings_ms
        out["total"].append((time.perf_counter() - t) * 1000)
        for s in STAGES:
            out[s].append(timings.get(s, 0.0))
    return out


def time_dense(state, query_vectors: np.ndarray, depth: int) -> dict[str, list[float]]:
    """ms of `state.search_dense` alone (the call the retriever makes) for precomputed query vectors."""
    for v in query_vectors[:2]:
        state.search_dense(v, depth)
    ms = []
    for v in query_vectors:
        t = time.perf_counter()
        state.search_dense(v, depth)
        ms.append((time.perf_counter() - t) * 1000)
    return {"dense": ms}


def measure_size(n: int, qs: list[str], scifact_docs: int, embedder, settings) -> dict:
    """Build BM25, flat and HNSW for `n` chunks; the shipped dense index runs in the full retriever,
    the other one is timed alone on the same query vectors."""
    from rag.dense import DenseIndex
    from rag.retrieve import Retriever

    data = corpus.scaled(n, scifact_docs)
    vectors = random_vectors(n)
    result = {"n": n, "build_s": {}, "ms": {}}
    dense = {}
    for kind, threshold in (("flat", n + 1), ("hnsw", 0)):
        t = time.perf_counter()
        dense[kind] = DenseIndex.build(vectors, dim=DIM, hnsw_threshold=threshold)
        result["build_s"][kind] = time.perf_counter() - t
    result["hnsw_bytes"] = hnsw_link_bytes(dense["hnsw"].index)
    shipped = "hnsw" if n >= settings.hnsw_threshold else "flat"
    other = "flat" if shipped == "hnsw" else "hnsw"
    t = time.perf_counter()
    state = build_state(data.texts, data.tokens, dense[shipped])
    result["build_s"]["bm25"] = time.perf_counter() - t
    result["bm25_bytes"] = bm25_bytes(state.state.bm25)
    result["vocab"] = len(state.state.bm25.vocab)
    retriever = Retriever(state, embedder, settings)
    t = time.perf_counter()
    retriever.search(qs[0], mode="hybrid")  # first query: warms the embedder and the caches
    result["build_s"]["first_query"] = time.perf_counter() - t
    result["shipped"] = shipped
    result["ms"][shipped] = time_queries(retriever, qs)
    query_vectors = embedder.encode_queries(qs)
    state.state.dense = dense[other]
    result["ms"][other] = time_dense(state, query_vectors, settings.candidates)
    with one_thread():
        result["dense1"] = {}
        for kind in ("flat", "hnsw"):
            state.state.dense = dense[kind]
            result["dense1"][kind] = time_dense(state, query_vectors, settings.candidates)["dense"]
        state.state.dense = dense[shipped]
        result["threads1"] = time_queries(retriever, qs[: max(10, len(qs) // 2)])
    return result


@contextmanager
def one_thread():
    """torch and FAISS limited to one thread each inside the block (then restored)."""
    import faiss
    import torch

    torch_threads, omp_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        faiss.omp_set_num_threads(omp_threads)


def stage_rows(results: list[dict]) -> list[list]:
    """One row per (size, dense index, stage) with p50/p95 ms."""
    rows = []
    for r in results:
        runs = [(f"{r['n']:,} / {kind}" + (" (shipped, full retriever)" if kind == r["shipped"] else " (dense alone)"), ms)
                for kind, ms in r["ms"].items()]
        runs.append((f"{r['n']:,} / {r['shipped']} — torch + FAISS 1 thread", r["threads1"]))
        runs += [(f"{r['n']:,} / {kind} (dense alone, 1 thread)", {"dense": ms}) for kind, ms in r["dense1"].items()]
        for label, ms in runs:
            for stage in (*STAGES, "total"):
                if stage in ms:
                    rows.append([label, stage, pct(ms[stage], 50), pct(ms[stage], 95)])
    return rows


def fit(n1: float, t1: float, n2: float, t2: float, x, at: float) -> float:
    """Value at `at` of the line through (x(n1), t1), (x(n2), t2)."""
    slope = (t2 - t1) / (x(n2) - x(n1))
    return t1 + slope * (x(at) - x(n1))


def extrapolation(small: dict, large: dict) -> str:
    """1M chunks on paper: memory from measured bytes/chunk, time from the two measured sizes."""
    n1, n2 = small["n"], large["n"]
    lin, log = (lambda n: n), math.log

    def d1(r, kind):
        return pct(r["dense1"][kind], 50)

    def shipped(r, stage):
        return pct(r["ms"][r["shipped"]][stage], 50)

    arrays, vocab = large["bm25_bytes"]
    hnsw_per = large["hnsw_bytes"] / n2
    vec = TARGET * DIM * 4
    mem_rows = [
        ["vectors (FAISS flat codes) 1M × 384 × 4 B", mib(vec), "exact"],
        ["vectors.npy kept beside FAISS (memory-mapped)", mib(vec), "exact; page cache, evictable"],
        ["HNSW graph (M=32)", mib(hnsw_per * TARGET), f"{hnsw_per:.0f} B/chunk measured at {n2:,}, linear"],
        ["BM25 numpy arrays", mib(arrays / n2 * TARGET), f"{arrays / n2:.0f} B/chunk measured at {n2:,}, linear"],
        ["BM25 vocabulary (Python dict)", f"≥ {mib(vocab)}",
         f"{large['vocab']:,} terms at {n2:,}; replicas add no new words, a real 1M corpus has more"],
    ]
    t_rows = [
        ["dense flat p50 (1 thread)", d1(large, "flat"), fit(n1, d1(small, "flat"), n2, d1(large, "flat"), lin, TARGET), "linear in n"],
        ["dense HNSW p50 (1 thread)", d1(large, "hnsw"), fit(n1, d1(small, "hnsw"), n2, d1(large, "hnsw"), log, TARGET), "linear in log n"],
        ["BM25 p50", shipped(large, "bm25"), fit(n1, shipped(small, "bm25"), n2, shipped(large, "bm25"), lin, TARGET), "linear in n (postings)"],
        ["fusion p50", shipped(large, "fuse"), shipped(large, "fuse"), "constant (2 × candidates rows)"],
        ["query embedding p50", shipped(large, "embed"), shipped(large, "embed"), "constant"],
        ["BM25 build (s)", large["build_s"]["bm25"], fit(n1, small["build_s"]["bm25"], n2, large["build_s"]["bm25"], lin, TARGET), "linear in n"],
        ["HNSW build (s)", large["build_s"]["hnsw"], large["build_s"]["hnsw"] * TARGET / n2 * math.log(TARGET) / math.log(n2), "n log n"],
    ]
    return "\n\n".join([
        f"### 1M chunks — EXTRAPOLATION, not measured\n\nMemory (from measured bytes per chunk at {n2:,}):",
        table(["component", "1M chunks", "basis"], mem_rows),
        f"Time (ms unless noted; fitted through the measured {n1:,} and {n2:,} points; dense from the 1-thread "
        "runs, whose cost is the index's own rather than waiting for busy cores):",
        table(["quantity", f"measured at {n2:,}", "1M (extrapolated)", "model"], t_rows),
    ])


def run(quick: bool) -> str:
    """Measure both sizes and return the Markdown section."""
    from rag.settings import Settings

    settings = Settings()
    qs = questions(N_QUESTIONS[quick])
    embedder = corpus.embedder()
    small_n, large_n = SIZES[quick]
    results = [measure_size(n, qs, SCIFACT_DOCS[quick], embedder, settings) for n in (small_n, large_n)]
    data = corpus.scaled(large_n, SCIFACT_DOCS[quick])
    agreement = corpus.token_agreement(data)
    build_rows = [
        [f"{r['n']:,}", r["build_s"]["bm25"], r["build_s"]["flat"], r["build_s"]["hnsw"],
         r["build_s"]["first_query"], r["vocab"], mib(r["bm25_bytes"][0])]
        for r in results
    ]
    return "\n\n".join([
        "## Retrieval latency per stage",
        f"{len(qs)} real dev questions (llm-notes-zh.dev.jsonl), `Retriever.search(mode='hybrid', k={settings.top_k})`, "
        f"{settings.candidates} candidates per retriever, {settings.fusion} fusion. Chunks: {data.n_base:,} real chunks "
        f"(llm-notes-zh + first {SCIFACT_DOCS[quick]} scifact abstracts, real chunker) replicated with perturbation "
        f"(sentences shuffled, one dropped, {corpus.INSERTED_WORDS} corpus words inserted); BM25 over real jieba tokens "
        f"(cached tokens equal `tokenize(text)` for {agreement:.0%} of 200 sampled replicas). Dense: random unit "
        f"384-d vectors in FAISS, flat and HNSW (M=32, efSearch=128) at both sizes. Query embedding: the real "
        f"{embedder.name} on CPU, one query at a time. Rerank: none — no reranker is configured offline "
        f"(settings.reranker = {settings.reranker!r}), so there is no rerank stage to time.",
        table(["chunks / dense index", "stage", "p50 ms", "p95 ms"], stage_rows(results)),
        "The shipped dense index (flat below settings.hnsw_threshold, HNSW at or above) runs inside the full "
        "retriever; the other is timed alone (`KBState.search_dense`, same query vectors). The '1 thread' blocks "
        "repeat the work with `torch.set_num_threads(1)` and `faiss.omp_set_num_threads(1)` (the app sets "
        "neither): on a shared 2-core machine, multi-threaded single-query work waits on busy cores, so compare "
        "default vs 1-thread rows within this run.",
        "Build (seconds) and size:",
        table(["chunks", "BM25 build s", "FAISS flat s", "FAISS HNSW s", "first query s (one-time chunk scans)", "vocabulary", "BM25 arrays"], build_rows),
        "HNSW on random vectors is a worst case for build time (no cluster structure); real embeddings build faster.",
        extrapolation(*results),
    ])


def main(argv: list[str] | None = None) -> int:
    """Run alone: `python -m bench.retrieval_latency [--quick]`."""
    return module_main(run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
