"""`python -m bench [--quick] [--only NAME ...]`: run the benchmarks and write bench/RESULTS.md.

examples:
  python -m bench                          # everything, full sizes (~20 min), writes bench/RESULTS.md
  python -m bench --quick                  # smaller sizes (a few minutes), writes bench/RESULTS-quick.md
  python -m bench --only bm25_vs_rank_bm25 # one benchmark, printed only (add --out FILE to write it)
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

from bench import BENCHMARKS

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0],
                                     epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a smoke run of every benchmark")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, metavar="NAME",
                        help=f"run only these benchmarks ({', '.join(BENCHMARKS)})")
    parser.add_argument("--out", type=Path, help="Markdown file to write (default: bench/RESULTS.md, "
                        "bench/RESULTS-quick.md with --quick, none with --only)")
    return parser.parse_args(argv)


def header(quick: bool, names: list[str]) -> str:
    """Title, date, machine table and the caveat about the shared machine."""
    from bench.common import machine_info, table

    info = machine_info()
    return "\n\n".join([
        "# Performance benchmarks",
        f"Date: {time.strftime('%Y-%m-%d %H:%M %Z')} · mode: {'--quick (reduced sizes)' if quick else 'full'} · "
        f"benchmarks: {', '.join(names)}",
        table(["machine", ""], list(info.items())),
        "Figures were taken on a **shared 2-core machine** while other developers' jobs were running (see the "
        "load average), so absolute times are noisy and pessimistic; compare the ratios, which were measured in "
        "the same run on the same machine.",
    ])


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks in order; a failing one becomes a section saying so."""
    args = parse_args(argv)
    from bench.common import quiet_libraries

    quiet_libraries()
    names = list(args.only or BENCHMARKS)
    out = args.out or (None if args.only else HERE / ("RESULTS-quick.md" if args.quick else "RESULTS.md"))
    sections, failed = [header(args.quick, names)], []
    for name in names:
        t = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            section = importlib.import_module(f"bench.{name}").run(args.quick)
        except Exception:  # noqa: BLE001 - report it and go on with the next benchmark
            failed.append(name)
            section = f"## {name}: FAILED\n\n```\n{traceback.format_exc()}```"
        took = time.perf_counter() - t
        print(f"[bench] {name} done in {took:.0f} s", file=sys.stderr, flush=True)
        sections.append(f"{section}\n\n_{name} took {took:.0f} s._")
    sections.append("## How to reproduce\n\n```\npython -m bench            # full, writes bench/RESULTS.md\n"
                    "python -m bench --quick    # smoke run, bench/RESULTS-quick.md\n"
                    "python -m bench.<name> [--quick]   # one benchmark, printed\n```")
    text = "\n\n".join(sections) + "\n"
    print(text)
    if out:
        out.write_text(text, encoding="utf-8")
        print(f"[bench] wrote {out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
