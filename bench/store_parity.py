"""Store parity: one knowledge base on `files` and on Milvus Lite, through `rag.eval retrieval`.

    python -m bench.store_parity --kb notes --qa data/qa/llm-notes-zh.dev.jsonl
    python -m bench.store_parity --kb cmrc --qa eval-out/issue12/cmrc/qa.jsonl

Copies the ingested `files` knowledge base into Milvus Lite with the same vectors, terms and priors (no
re-embedding; the copy goes through the store contract, `MilvusStore.apply`), runs `python -m rag.eval
retrieval` on both, and prints each metric on both backends plus the mean per-question overlap of the
top-10 chunk ids.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import quiet_libraries, table

MODES = "bm25,dense,hybrid"
METRICS = ("hit@1", "hit@3", "hit@5", "hit@10", "mrr@10", "ndcg@10")


def copy_to_milvus(files_settings, milvus_settings) -> float:
    """Write the files knowledge base into Milvus through the contract; returns the seconds it took."""

    from rag import store
    from rag.stores.files import load_state

    state = load_state(Path(files_settings.index_dir), files_settings.kb)
    batch = store.Batch(list(state.documents.values()), state.chunks, np.asarray(state.dense.vectors),
                        [[state.bm25.vocab[t] for t, tf in zip(*_row(state.bm25, r)) for _ in range(int(tf))]
                         for r in range(len(state.chunks))], state.prior.tolist())
    t = time.perf_counter()
    kb = store.open_store(milvus_settings, create=state.manifest)
    kb.apply(batch, set(), state.manifest)
    return time.perf_counter() - t


def _row(bm25, row: int) -> tuple[np.ndarray, np.ndarray]:
    """(term ids, counts) of one BM25 row."""
    lo, hi = bm25.indptr[row], bm25.indptr[row + 1]
    return bm25.term_ids[lo:hi], bm25.tfs[lo:hi]


def evaluate(kb: str, qa: Path, store_name: str, milvus_uri: str, out: Path, modes: str) -> dict:
    """`python -m rag.eval retrieval` on one backend (in this process; settings from the environment)."""
    from rag.eval.__main__ import main as eval_main

    os.environ["RAG_STORE"], os.environ["RAG_MILVUS_URI"] = store_name, milvus_uri
    code = eval_main(["retrieval", "--kb", kb, "--qa", str(qa), "--modes", modes, "--json", str(out), "--quiet"])
    if code:
        raise SystemExit(f"rag.eval retrieval failed on {store_name} (exit {code})")
    return json.loads(out.read_text(encoding="utf-8"))


def overlap(a: dict, b: dict, mode: str) -> float:
    """Mean over questions of |top10(a) ∩ top10(b)| / |top10(a)|."""
    tops = {r["id"]: r["top"] for r in b["per_question"] if r["mode"] == mode}
    shares = [len(set(r["top"]) & set(tops[r["id"]])) / max(1, len(r["top"]))
              for r in a["per_question"] if r["mode"] == mode]
    return float(np.mean(shares))


def main(argv: list[str] | None = None) -> int:
    """Copy, evaluate both, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kb", required=True)
    parser.add_argument("--qa", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("eval-out/store-parity"))
    parser.add_argument("--modes", default=MODES, help=f"rag.eval retrieval modes (default {MODES})")
    args = parser.parse_args(argv)
    quiet_libraries()
    from rag.settings import Settings

    args.out.mkdir(parents=True, exist_ok=True)
    uri = str(Path(tempfile.mkdtemp(prefix="parity-")) / "kb.db")
    files_settings = Settings(kb=args.kb)
    copy_s = copy_to_milvus(files_settings, files_settings.model_copy(update={"store": "milvus", "milvus_uri": uri}))
    reports = {name: evaluate(args.kb, args.qa, name, uri, args.out / f"{args.kb}.{name}.json", args.modes) for name in ("files", "milvus")}
    rows = []
    for mode in args.modes.split(","):
        f, m = reports["files"]["modes"][mode], reports["milvus"]["modes"][mode]
        rows.append([mode, *(f"{f[k]:.3f} / {m[k]:.3f}" for k in METRICS), f"{max(abs(f[k] - m[k]) for k in METRICS):.4f}",
                     f"{overlap(reports['files'], reports['milvus'], mode):.3f}",
                     f"{f['latency_ms_p50']:.1f} / {m['latency_ms_p50']:.1f}"])
    print(f"{args.kb}: {reports['files']['modes']['hybrid']['n']} answerable questions; copied into Milvus Lite in "
          f"{copy_s:.1f} s")
    print(table(["mode", *(f"{k} files / milvus" for k in METRICS), "max |Δ|", "top-10 overlap", "p50 ms files / milvus"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
