"""Time of the citation/support step (rag.check.check_answer) on a recorded run's answers, with the lexicon's
two rules (rag.attribute.TRANSLATED_MARGIN / rag.cite.TRANSLATED_FLOOR) on and off, alternating, plus the
lexicon's build; and the checks a stream makes (rag.check.CheckedStream, the draft fed 4 characters at a time).

    flock /tmp/rag-bench.lock python -m bench.check_cost eval-out/s22/dev.record.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from bench.refusal_thresholds import recorded_sources
from rag import attribute, cite
from rag.check import CheckedStream, check_answer
from rag.embed import load_embedder
from rag.lexicon import lexicon
from rag.settings import load_settings


def timings(rows: list[dict], embed) -> list[float]:
    out = []
    for r in rows:
        sources = recorded_sources(r)
        start = time.perf_counter()
        check_answer(r["draft"] or r["answer"], sources, embed, r["standalone_question"])
        out.append(time.perf_counter() - start)
    return out


def streamed(rows: list[dict], embed) -> list[float]:
    """Per answer: the seconds CheckedStream spends checking while the draft streams in, then the final check."""
    out = []
    for r in rows:
        draft = r["draft"] or r["answer"]
        start = time.perf_counter()
        stream = CheckedStream(lambda _: None, recorded_sources(r), embed, r["standalone_question"])
        for i in range(0, len(draft), 4):
            stream(draft[i:i + 4])
        check_answer(draft, stream.sources, stream.embed, r["standalone_question"])
        out.append(time.perf_counter() - start)
    return out


def _line(name: str, t: list[float]) -> str:
    t = sorted(t)
    return f"{name}: {len(t)} answers, p50 {statistics.median(t) * 1000:.0f} ms, p95 {t[int(0.95 * (len(t) - 1))] * 1000:.0f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("rows", type=Path)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    lexicon()
    print(f"lexicon build: {time.perf_counter() - start:.2f} s")
    rows = [json.loads(line) for line in args.rows.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if not r["refused"]]
    embed = load_embedder(load_settings()).encode_queries
    rules = {"on": (attribute.TRANSLATED_MARGIN, cite.TRANSLATED_FLOOR), "off": (float("inf"), 0.0)}
    for _ in range(args.rounds):
        for name, (margin, floor) in rules.items():
            attribute.TRANSLATED_MARGIN, cite.TRANSLATED_FLOOR = margin, floor
            print(_line(f"rules {name}", timings(rows, embed)))
        attribute.TRANSLATED_MARGIN, cite.TRANSLATED_FLOOR = rules["on"]
        print(_line("streamed (checks while streaming + the final check)", streamed(rows, embed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
