"""Ingest throughput against the raw encoder on the same texts, and the cost of a no-change re-ingest.

In-process: `run_ingest` into a temp index with the default settings (model load excluded; `embedder = "auto"`
picks e5 for llm-notes-zh and bge-small-en for SciFact), then the knowledge base's own embedder's
`encode_passages` on exactly the chunk texts it indexed, same batch size. As whole
commands: `python -m ingest PATH --quiet` in a subprocess, fresh and then again with nothing
changed, with wall time and the child's peak RSS (`os.wait4` rusage).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

from bench.common import LLM_NOTES, REPO, SCIFACT, module_main, table

SCIFACT_SLICE = 100  # the shared 2-core machine embeds only a few chunks/s under load
QUICK_FILES = ("000_ab48d4257dbd1536.txt", "001_9f8b729742497457.txt")  # the two smallest llm-notes files
# Runs the ingest command in a fresh interpreter and reports its wall time and peak RSS: a child
# forked straight from this (large) process would inherit our RSS high-water mark in ru_maxrss.
LAUNCHER = """
import resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, rc)
"""
RATIO_GOAL, REINGEST_GOAL = 0.8, 0.05


def scifact_slice(folder: Path, n: int = SCIFACT_SLICE) -> Path:
    """The first `n` scifact documents as a corpus.jsonl in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "corpus.jsonl"
    with SCIFACT.open(encoding="utf-8") as src:
        out.write_text("".join(islice(src, n)), encoding="utf-8")
    return out


def in_process(path: Path, index_dir: Path, kb: str) -> dict:
    """Full ingest, raw encode of the same texts, no-change re-ingest; seconds and counts."""
    from ingest.pipeline import run_ingest
    from rag.embed import load_embedder
    from rag.embedder_choice import for_manifest
    from rag.settings import Settings
    from rag.store import peek_manifest
    from rag.stores.files import load_state

    settings = Settings(index_dir=index_dir, kb=kb)
    t = time.perf_counter()
    report = run_ingest([path], settings, progress=False)
    wall = time.perf_counter() - t
    ingest_s = wall - report.stage_s.get("model_load", 0.0)
    embedder = load_embedder(for_manifest(settings, peek_manifest(settings)))  # the one "auto" chose for the corpus
    texts = [c.text for c in load_state(index_dir, kb).chunks]
    t = time.perf_counter()
    embedder.encode_passages(texts, batch_size=settings.embed_batch_size)
    raw_s = time.perf_counter() - t
    t = time.perf_counter()
    again = run_ingest([path], settings, progress=False)
    noop_s = time.perf_counter() - t
    return {"chunks": len(texts), "embedded": report.chunks_embedded, "ingest_s": ingest_s, "raw_s": raw_s,
            "noop_s": noop_s, "noop_embedded": again.chunks_embedded, "stages": dict(report.stage_s)}


def command(path: Path, index_dir: Path, kb: str) -> tuple[float, int, int]:
    """(wall s, peak RSS bytes, exit code) of `python -m ingest PATH --quiet` as a child process."""
    cmd = [sys.executable, "-m", "ingest", str(path), "--kb", kb, "--index-dir", str(index_dir), "--quiet"]
    out = subprocess.run([sys.executable, "-c", LAUNCHER, *cmd], cwd=REPO, capture_output=True, text=True, check=True)
    wall, rss, rc = out.stdout.split()
    return float(wall), int(rss), int(rc)


def quick_corpus(folder: Path) -> Path:
    """A copy of the two smallest llm-notes-zh files."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in QUICK_FILES:
        shutil.copy(LLM_NOTES / name, folder / name)
    return folder


def measure(name: str, path: Path, work: Path) -> dict:
    """Everything for one corpus."""
    result = in_process(path, work / "inproc", name)
    full = command(path, work / "cmd", name)
    noop = command(path, work / "cmd", name)
    return {"name": name, **result, "cmd_full": full, "cmd_noop": noop}


def run(quick: bool) -> str:
    """Measure llm-notes-zh (and a scifact slice unless quick); return the Markdown section."""
    from rag.settings import Settings

    settings = Settings()
    with tempfile.TemporaryDirectory(prefix="rag-bench-ingest-") as tmp:
        work = Path(tmp)
        if quick:
            corpora = [("llm-notes-zh-2-files", quick_corpus(work / "notes"))]
        else:
            corpora = [("llm-notes-zh", LLM_NOTES), (f"scifact-first-{SCIFACT_SLICE}", scifact_slice(work / "scifact"))]
        results = [measure(name, path, work / name) for name, path in corpora]
    rows, reingest_rows, stage_rows = [], [], []
    for r in results:
        ratio = r["raw_s"] / r["ingest_s"]
        rows.append([r["name"], r["chunks"], r["embedded"], r["chunks"] / r["ingest_s"], r["chunks"] / r["raw_s"],
                     f"{ratio:.2f} ({'meets' if ratio >= RATIO_GOAL else 'below'} {RATIO_GOAL})"])
        (full_s, full_rss, full_rc), (noop_s, noop_rss, noop_rc) = r["cmd_full"], r["cmd_noop"]
        reingest_rows += [
            [r["name"], "in-process", r["ingest_s"], r["noop_s"], f"{r['noop_s'] / r['ingest_s']:.3f}", "—", "—"],
            [r["name"], "command", full_s, noop_s, f"{noop_s / full_s:.3f}",
             f"{full_rss / 2**20:,.0f} / {noop_rss / 2**20:,.0f}", f"{full_rc} / {noop_rc}"],
        ]
        stage_rows.append([r["name"], ", ".join(f"{k} {v:.2f}" for k, v in r["stages"].items() if v >= 0.005)])
    return "\n\n".join([
        "## Ingest throughput",
        f"`run_ingest` into a temp index with the embedder already loaded (model load excluded), then "
        f"`encode_passages` on exactly the chunk texts it indexed, same process, batch size "
        f"{settings.embed_batch_size}. Ratio = (chunks / ingest s) / (chunks / raw encode s); goal ≥ {RATIO_GOAL}. "
        "The ingest includes loading, cleaning, chunking (token counting), jieba tokenizing, index build and the "
        "atomic write. Peak RSS is the child's `ru_maxrss`, measured from a fresh launcher interpreter.",
        table(["corpus", "chunks", "embedded", "ingest chunks/s", "raw encoder chunks/s", "ratio"], rows),
        f"No-change re-ingest vs full ingest (goal ≤ {REINGEST_GOAL}). Command = `python -m ingest PATH --kb K "
        "--index-dir DIR --quiet` as a child process: a fresh index, then the same command again; wall time includes "
        "interpreter start, imports and (full run only) model load.",
        table(["corpus", "how", "full s", "no-change s", "ratio", "peak RSS MiB full / no-change", "exit codes"],
              reingest_rows),
        "In-process full-ingest stage seconds (`IngestReport.stage_s`):",
        table(["corpus", "stages"], stage_rows),
    ])


def main(argv: list[str] | None = None) -> int:
    """Run alone: `python -m bench.ingest_throughput [--quick]`."""
    return module_main(run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
