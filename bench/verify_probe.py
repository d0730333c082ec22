"""Does the LLM's check of its own answer separate invented answers from real ones? (Tried; not adopted.)

    python -m bench.refusal_thresholds eval-out/s19/dev.record.jsonl --qa data/qa/llm-notes-zh.dev.jsonl \
        --recheck --save /tmp/rechecked.jsonl
    python -m bench.verify_probe /tmp/rechecked.jsonl --answerable 30

For every answered unanswerable question and a seeded sample of answered answerable ones, the recorded
answer goes back to the model after its own prompt (rag.prompt.build_messages over the recorded evidence),
followed by "do the sources explicitly state every sentence of your answer?"; P(yes) is read from the
first-token probabilities as the answerability check reads it. Prints both groups' P(yes), sorted.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from rag.chain import ANSWER_OPTIONS
from rag.llm import client_from_settings
from rag.prompt import Source, build_messages
from rag.records import Chunk
from rag.settings import load_settings
from rag.text import language

VERIFY = {"zh": "检查你的回答：上面的资料是否明确写了你回答里的每一句话（不是只谈到同一个话题）？只回复是或否。",
          "en": "Check your answer: do the sources above explicitly state every sentence of your answer "
                "(not only talk about the same topic)? Reply only yes or no."}


def p_yes(row: dict, llm) -> float | None:
    """P(yes) of the model's check of its own recorded answer."""
    lang = language(row["question"])
    sources = [Source(e["n"], (Chunk("", e["doc_id"], e["text"], ""),), "", "", e["text"], e["n"]) for e in row["evidence"]]
    messages = [*build_messages(row["standalone_question"], sources, lang=lang),
                {"role": "assistant", "content": row["answer"]}, {"role": "user", "content": VERIFY[lang]}]
    yes, no = ANSWER_OPTIONS[lang]
    probs = llm.option_probabilities(messages, [yes, no])
    total = probs[yes] + probs[no]
    return probs[yes] / total if total > 0.05 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", type=Path, help="rechecked rows (bench.refusal_thresholds --save)")
    parser.add_argument("--answerable", type=int, default=30, help="answered answerable questions to probe")
    args = parser.parse_args(argv)
    rows = [json.loads(line) for line in args.rows.read_text(encoding="utf-8").splitlines() if line.strip()]
    answered = [r for r in rows if not r["refused"]]
    unanswerable = [r for r in answered if not r["answerable"]]
    answerable = random.Random(1).sample([r for r in answered if r["answerable"]],
                                         min(args.answerable, sum(r["answerable"] for r in answered)))
    llm = client_from_settings(load_settings())
    for label, group in (("answerable", answerable), ("unanswerable", unanswerable)):
        values = sorted(v for v in (p_yes(r, llm) for r in group) if v is not None)
        print(f"{label} ({len(values)}): " + ", ".join(f"{v:.2f}" for v in values))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
