"""Shared helpers for the benchmarks: Markdown tables, percentiles, timers, questions, machine info."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
LLM_NOTES = SHARED / "corpus" / "llm-notes-zh"
SCIFACT = SHARED / "datasets" / "scifact" / "corpus.jsonl"
DEV_QUESTIONS = REPO / "data" / "qa" / "llm-notes-zh.dev.jsonl"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; floats are printed with 3 significant-ish digits."""
    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}" if abs(v) >= 0.01 else f"{v:.2g}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of `values`, nan when empty."""
    return float(np.percentile(values, q)) if len(values) else float("nan")


@contextmanager
def timer(out: dict, key: str):
    """Add the seconds spent in the block to out[key]."""
    t = time.perf_counter()
    try:
        yield
    finally:
        out[key] = out.get(key, 0.0) + time.perf_counter() - t


def questions(n: int) -> list[str]:
    """`n` real questions from the llm-notes-zh dev set, spread over the file (zh and en)."""
    rows = [json.loads(line) for line in DEV_QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    step = max(1, len(rows) // n)
    return [r["question"] for r in rows[::step]][:n]


def mib(n_bytes: float) -> str:
    """Bytes as MiB/GiB text."""
    return f"{n_bytes / 2**30:.2f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.1f} MiB"


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (platform's guess elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ram_bytes() -> int:
    """Total physical memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def machine_info() -> dict[str, str]:
    """CPU, cores, RAM, load and the versions that matter for these figures."""
    import faiss
    import torch

    info = {
        "CPU": cpu_model(),
        "cores (os.cpu_count)": str(os.cpu_count()),
        "RAM": mib(ram_bytes()),
        "load average at start (1/5/15 min)": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
        "OS": platform.platform(),
        "Python": sys.version.split()[0],
        "torch": f"{torch.__version__} ({torch.get_num_threads()} intra-op threads)",
        "faiss": faiss.__version__,
        "numpy": np.__version__,
    }
    for pkg in ("sentence_transformers", "rank_bm25", "jieba", "xllamacpp"):
        info[pkg] = _version(pkg)
    return info


def _version(pkg: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(pkg.replace("_", "-"))
    except metadata.PackageNotFoundError:
        return "not installed"


def quiet_libraries() -> None:
    """Silence progress bars and info logs from the libraries the benchmarks load."""
    import logging
    import warnings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def module_main(run: Callable[[bool], str], doc: str, argv: list[str] | None = None) -> int:
    """`python -m bench.<name> [--quick]`: print the module's Markdown section."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run, minutes)")
    args = parser.parse_args(argv)
    quiet_libraries()
    print(run(args.quick))
    return 0
