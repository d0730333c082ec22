"""`python -m rag.models`: provision the bundled models into the local cache (idempotent)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(
        prog="python -m rag.models",
        description="Materialize the bundled embedders, reranker and LLM into the model cache.",
        epilog="example: python -m rag.models --llm-size 0.5b",
    )
    parser.add_argument("--cache-dir", type=Path, help="model cache (default: settings.cache_dir)")
    parser.add_argument("--llm-size", choices=["0.5b", "1.5b", "all", "none"], help="default: settings.llm_size")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Provision; print where each model is and whether any work was done."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from rag.models.e5 import is_materialized, materialize_e5
    from rag.models.gguf import GGUFS, ModelIntegrityError, assemble_gguf
    from rag.models.onnx_bundle import BUNDLED_ONNX, provision
    from rag.settings import load_settings

    settings = load_settings(cache_dir=args.cache_dir)
    sizes = {"all": ["0.5b", "1.5b"], "none": []}.get(args.llm_size or settings.llm_size, [args.llm_size or settings.llm_size])
    did_work = False

    t = time.perf_counter()
    target = settings.cache_dir / "multilingual-e5-small"
    fresh = not is_materialized(target)
    path = materialize_e5(target, progress=not args.quiet)
    did_work |= fresh
    print(f"embedder  multilingual-e5-small  {path}  ({'materialized' if fresh else 'already there'}, {time.perf_counter() - t:.1f}s)")

    for spec in BUNDLED_ONNX.values():
        t = time.perf_counter()
        try:
            folder, worked = provision(spec, settings.cache_dir)
        except (ModelIntegrityError, RuntimeError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        did_work |= worked
        print(f"onnx  {spec.name}  {folder}  ({'copied, sha256 verified' if worked else 'already there'}, {time.perf_counter() - t:.1f}s)")

    for size in sizes:
        t = time.perf_counter()
        try:
            gguf, worked = assemble_gguf(GGUFS[size], settings.cache_dir, progress=not args.quiet)
        except (ModelIntegrityError, RuntimeError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        did_work |= worked
        print(f"llm {size:>5}  {GGUFS[size].filename}  {gguf}  ({'assembled, sha256 verified' if worked else 'already there'}, {time.perf_counter() - t:.1f}s)")
    print("done: models provisioned" if did_work else "nothing to do: every model is already provisioned")
    return 0


if __name__ == "__main__":
    sys.exit(main())
