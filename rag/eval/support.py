"""The support check against a labelled set: precision and recall of the "unsupported" flag.

`python -m rag.eval support --data data/qa/support.jsonl` judges every labelled answer sentence
against its cited evidence with `rag.cite.judge_sentence` (the chain's rule and thresholds) and
reports, per language pair, how well "unsupported" matches the labels; `--sweep` also tabulates
other cosine thresholds, which is how `rag.cite.COSINE_THRESHOLD` was chosen.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Labelled:
    """One answer sentence, the evidence it cites and its label."""

    id: str
    pair: str  # "zh-zh" | "en-zh" | "en-en": sentence language -> evidence language
    sentence: str
    evidence: str
    supported: bool
    kind: str


def load_labelled(path: Path) -> list[Labelled]:
    """Read the labelled JSON Lines file; a bad row is an error naming the line."""
    from rag.eval.qa import jsonl_rows

    rows = []
    for n, r in jsonl_rows(path, "labelled support row"):
        try:
            rows.append(Labelled(r["id"], r["pair"], r["sentence"], r["evidence"], r["label"] == "supported", r["kind"]))
        except KeyError as e:
            raise ValueError(f"{path}:{n}: not a labelled support row: missing {e}") from e
    return rows


def cosines(rows: Sequence[Labelled], embedder) -> list[float]:
    """Cosine of each sentence (markers stripped) to its evidence, symmetric e5 ("query: " both sides)."""
    from rag.cite import strip_markers

    a = embedder.encode_queries([strip_markers(r.sentence) for r in rows])
    b = embedder.encode_queries([r.evidence for r in rows])
    return [float(x) for x in (a * b).sum(axis=1)]


def flag_scores(flags: Sequence[bool], rows: Sequence[Labelled]) -> dict:
    """Precision / recall of the unsupported flag, and supported sentences wrongly flagged."""
    tp = sum(f and not r.supported for f, r in zip(flags, rows, strict=True))
    fp = sum(f and r.supported for f, r in zip(flags, rows, strict=True))
    fn = sum(not f and not r.supported for f, r in zip(flags, rows, strict=True))
    return {"n": len(rows), "precision": round(tp / (tp + fp), 3) if tp + fp else None,
            "recall": round(tp / (tp + fn), 3) if tp + fn else None, "false_flags": fp, "missed": fn}


def evaluate(rows: Sequence[Labelled], cos: Sequence[float], cosine_threshold: float) -> tuple[dict, list[dict]]:
    """Scores per pair and overall, and one verdict row per labelled sentence."""
    from rag.cite import judge_sentence

    verdicts = []
    for r, c in zip(rows, cos, strict=True):
        lexical, missing, ok = judge_sentence(r.sentence, r.evidence, c, cosine_threshold=cosine_threshold)
        verdicts.append({"id": r.id, "pair": r.pair, "kind": r.kind, "label": r.supported, "flagged": not ok,
                         "lexical": round(lexical, 3), "cosine": round(c, 4), "missing": missing})
    flags = [v["flagged"] for v in verdicts]
    scores = {"all": flag_scores(flags, rows)}
    for pair in sorted({r.pair for r in rows}):
        idx = [i for i, r in enumerate(rows) if r.pair == pair]
        scores[pair] = flag_scores([flags[i] for i in idx], [rows[i] for i in idx])
    return scores, verdicts


def add_support_parser(sub) -> None:
    """Register `support` on the `python -m rag.eval` parser."""
    p = sub.add_parser("support", help="precision/recall of the support check on a labelled set")
    p.add_argument("--data", type=Path, default=Path("data/qa/support.jsonl"))
    p.add_argument("--config", type=Path)
    p.add_argument("--sweep", action="store_true", help="also score other cosine thresholds")
    p.add_argument("--json", type=Path, help="write scores and per-sentence verdicts here")
    p.set_defaults(func=run_support)


def run_support(args: argparse.Namespace) -> int:
    """Score the check; print one line per pair (and per threshold with --sweep)."""
    from rag.cite import COSINE_THRESHOLD
    from rag.embed import load_embedder
    from rag.settings import load_settings

    rows = load_labelled(args.data)
    cos = cosines(rows, load_embedder(load_settings(args.config)))
    thresholds = sorted({COSINE_THRESHOLD, *([0.80, 0.82, 0.84, 0.85, 0.86, 0.87, 0.88, 0.90, 2.0] if args.sweep else [])})
    out = {}
    for t in thresholds:
        scores, verdicts = evaluate(rows, cos, t)
        out[str(t)] = scores
        for pair, s in scores.items():
            print(f"cosine>={t:.2f}  {pair:6s} n={s['n']:3d}  unsupported-flag precision {s['precision']}  "
                  f"recall {s['recall']}  supported flagged {s['false_flags']}  unsupported missed {s['missed']}")
        if t == COSINE_THRESHOLD and args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"scores": scores, "verdicts": verdicts}, ensure_ascii=False, indent=1),
                                 encoding="utf-8")
    return 0
