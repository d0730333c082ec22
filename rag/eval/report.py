"""Tables, a Markdown report and PNG plots of an answer evaluation (`rag.eval.answers`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

# (summary key, label, format) in table order; rates are 0..1
METRICS = [
    ("phrase_recall", "key-phrase recall", ".3f"),
    ("all_phrases", "all key phrases present", ".3f"),
    ("char_f1", "char F1 vs reference", ".3f"),
    ("refusal_accuracy", "refusal accuracy (unanswerable)", ".3f"),
    ("false_refusal_rate", "false refusals (answerable)", ".3f"),
    ("cited_share", "answers with >=1 citation", ".3f"),
    ("citation_precision", "citation precision", ".3f"),
    ("unsupported_sentence_share", "unsupported sentences", ".3f"),
    ("removed_citations", "removed (invalid) citations", "d"),
    ("faithfulness", "judge: faithful", ".3f"),
    ("evidence_phrase_recall", "key phrases in the evidence", ".3f"),
    ("evidence_ms_p50", "evidence shown ms p50", ".0f"),
    ("evidence_ms_p95", "evidence shown ms p95", ".0f"),
    ("first_token_ms_p50", "first token ms p50", ".0f"),
    ("first_token_ms_p95", "first token ms p95", ".0f"),
    ("total_ms_p50", "total ms p50", ".0f"),
    ("total_ms_p95", "total ms p95", ".0f"),
    ("prompt_tokens_mean", "prompt tokens (mean)", ".0f"),
    ("completion_tokens_mean", "completion tokens (mean)", ".0f"),
    ("n", "questions", "d"),
]
RATES = ["phrase_recall", "all_phrases", "char_f1", "refusal_accuracy", "false_refusal_rate",
         "cited_share", "citation_precision", "unsupported_sentence_share", "faithfulness", "evidence_phrase_recall"]


def _cell(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def metric_rows(summaries: dict[str, dict]) -> list[list[str]]:
    """One [label, value per config] row per metric that any config has."""
    return [[label] + [_cell(s.get(key), fmt) for s in summaries.values()]
            for key, label, fmt in METRICS if any(s.get(key) is not None for s in summaries.values())]


def format_table(summaries: dict[str, dict]) -> str:
    """Fixed-width table for the terminal: metrics down, configs across, follow-ups underneath."""
    def block(title: str, subs: dict[str, dict]) -> list[str]:
        rows = metric_rows(subs)
        width = max(len(r[0]) for r in rows) + 2
        head = f"{title:<{width}}" + "".join(f"{name:>14}" for name in subs)
        return [head, "-" * len(head)] + [f"{r[0]:<{width}}" + "".join(f"{c:>14}" for c in r[1:]) for r in rows]

    lines = block("metric", summaries)
    followups = {name: s["followup"] for name, s in summaries.items() if s.get("followup", {}).get("n")}
    if followups:
        lines += [""] + block("follow-ups", followups)
    return "\n".join(lines)


def markdown_table(summaries: dict[str, dict]) -> str:
    """The same metrics as a Markdown table."""
    lines = ["| metric | " + " | ".join(summaries) + " |", "|---|" + "---:|" * len(summaries)]
    lines += ["| " + " | ".join(r) + " |" for r in metric_rows(summaries)]
    return "\n".join(lines)


def pick_examples(rows: Sequence[dict], n: int = 2) -> tuple[list[dict], list[dict]]:
    """(best, worst) answerable rows by key-phrase recall, then char F1."""
    scored = [r for r in rows if r["answerable"] and r["verdicts"]["phrase_recall"] is not None]
    scored.sort(key=lambda r: (r["verdicts"]["phrase_recall"], r["verdicts"]["f1"] or 0.0))
    best = scored[::-1][:n]
    worst = [r for r in scored[:n] if r not in best]
    return best, worst


def _example(row: dict) -> str:
    verdicts = row["verdicts"]
    cites = ", ".join(f"[{c['n']}] {c['doc_id']}" + ("" if c["relevant"] else " (not relevant)") for c in row["citations"])
    answer = row["answer"].replace("\n", " ")
    return "\n".join([
        f"**{row['id']}** {row['question']}",
        "",
        f"> {answer[:600]}{'…' if len(answer) > 600 else ''}",
        "",
        f"recall {verdicts['phrase_recall']:.2f}, F1 {_cell(verdicts['f1'], '.2f')}, refused {row['refused']}, "
        f"citations: {cites or 'none'}",
        "",
    ])


def plot_metrics(summaries: dict[str, dict], path: Path) -> Path:
    """Grouped bar chart of the rate metrics per config."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = [k for k in RATES if any(s.get(k) is not None for s in summaries.values())]
    x = np.arange(len(keys))
    width = 0.8 / max(1, len(summaries))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(keys)), 4.0))
    for i, (name, s) in enumerate(summaries.items()):
        ax.bar(x + i * width, [s.get(k) or 0.0 for k in keys], width, label=name)
    ax.set_xticks(x + width * (len(summaries) - 1) / 2, [k.replace("_", " ") for k in keys], rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share")
    return _save(fig, ax, path)


def _save(fig, ax, path: Path) -> Path:
    """Legend, layout, write the PNG and free the figure."""
    import matplotlib.pyplot as plt

    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_latency(rows: dict[str, Sequence[dict]], path: Path) -> Path:
    """Histogram of total answer time (ms) per config."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for name, config_rows in rows.items():
        totals = [r["timings_ms"]["total"] for r in config_rows if r["timings_ms"].get("total") is not None]
        if totals:
            ax.hist(totals, bins=20, alpha=0.6, label=name)
    ax.set_xlabel("total ms per question")
    ax.set_ylabel("questions")
    return _save(fig, ax, path)


def write_report(report: dict, rows: dict[str, Sequence[dict]], out_dir: Path) -> Path:
    """Write `report.md`, `metrics.png` and `latency.png` into `out_dir`; returns the Markdown path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = report["configs"]
    plot_metrics(summaries, out_dir / "metrics.png")
    plot_latency(rows, out_dir / "latency.png")
    parts = [
        "# Answer evaluation",
        "",
        f"{report['n_questions']} questions from `{report.get('qa', '')}` on knowledge base `{report.get('kb', '')}`.",
        "",
        "## Metrics per config",
        "",
        markdown_table(summaries),
        "",
        "![metrics per config](metrics.png)",
        "",
    ]
    followups = {name: s["followup"] for name, s in summaries.items() if s.get("followup", {}).get("n")}
    if followups:
        parts += ["## Follow-up questions", "", markdown_table(followups), ""]
    parts += ["## Latency", "", "![total latency per config](latency.png)", ""]
    for name, config_rows in rows.items():
        best, worst = pick_examples(config_rows)
        parts += [f"## Examples ({name})", "", "### Best", ""] + [_example(r) for r in best]
        parts += ["### Worst", ""] + [_example(r) for r in worst]
    path = out_dir / "report.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
