"""`python -m ingest PATH... [--kb NAME] [--index-dir DIR] [--rebuild] [--delete PATH...] [--quiet]`."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

EXAMPLE = """examples:
  python -m ingest data/sample                       # index the sample corpus into the default KB
  python -m ingest ~/notes --kb notes                # another knowledge base
  python -m ingest ~/notes --kb notes --delete ~/notes/old.md
  python -m ingest ../shared/datasets/scifact/corpus.jsonl --kb scifact
"""

EXIT_OK, EXIT_NOTHING_INDEXED, EXIT_WRITE_FAILED, EXIT_LOCKED = 0, 1, 2, 3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(
        prog="python -m ingest",
        description="Load, clean, chunk and index documents (txt, md, html, pdf, docx, images by OCR, BEIR corpus.jsonl).",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="*", type=Path, help="files or folders (recursive)")
    parser.add_argument("--kb", help="knowledge-base name (default from settings)")
    parser.add_argument("--index-dir", type=Path, help="index directory (default from settings)")
    parser.add_argument("--config", type=Path, help="TOML settings file")
    parser.add_argument("--rebuild", action="store_true", help="discard the existing index and build anew")
    parser.add_argument("--delete", nargs="+", type=Path, default=[], metavar="PATH", help="remove these files/folders from the index")
    parser.add_argument("--quiet", action="store_true", help="no progress bars; summary only")
    args = parser.parse_args(argv)
    if not args.paths and not args.delete:
        parser.error("give at least one PATH to ingest or --delete PATH")
    return args


def print_summary(report, elapsed: float, out=None) -> None:
    """The end-of-run summary: per-status counts, failures with reasons, chunks, stage times."""
    out = out or sys.stdout
    counts = ", ".join(f"{s} {report.count(s)}" for s in ("added", "updated", "unchanged", "deleted", "failed"))
    print(f"knowledge base {report.kb!r}: files {counts}", file=out)
    for f in report.failed:
        print(f"  FAILED {f.source}: {f.reason}", file=out)
    for f in report.files:
        if f.status in ("added", "updated") and f.removed_share:
            print(f"  cleaned {f.source}: removed {f.removed_share:.1%} of characters", file=out)
        if f.status in ("added", "updated") and f.pages_ocr:
            dropped = f", {f.ocr_dropped_lines} low-confidence lines dropped" if f.ocr_dropped_lines else ""
            print(f"  pages {f.source}: {f.pages_text} by text layer, {f.pages_ocr} by OCR in {f.ocr_s:.1f}s{dropped}",
                  file=out)
    embedder = f" (embedder {report.embedder})" if report.embedder else ""
    print(f"chunks: {report.chunks_total} in index, {report.chunks_embedded} embedded this run{embedder}", file=out)
    stages = ", ".join(f"{k} {v:.2f}s" for k, v in report.stage_s.items() if v >= 0.005)
    print(f"time: {elapsed:.2f}s ({stages})", file=out)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from ingest.pipeline import run_ingest
    from rag import store
    from rag.settings import load_settings

    settings = load_settings(args.config, kb=args.kb, index_dir=args.index_dir)
    started = time.perf_counter()
    try:
        report = run_ingest(args.paths, settings, rebuild=args.rebuild, deletes=args.delete, progress=not args.quiet)
    except store.KBLocked as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_LOCKED
    except store.IndexMismatch as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_WRITE_FAILED
    except OSError as e:
        print(f"error: could not write the index in {settings.index_dir}: {e}", file=sys.stderr)
        return EXIT_WRITE_FAILED
    print_summary(report, time.perf_counter() - started)
    if report.chunks_total == 0:
        print("error: nothing could be indexed", file=sys.stderr)
        return EXIT_NOTHING_INDEXED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
