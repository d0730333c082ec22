"""Where an answers run's citations miss the labelled evidence, and what two rejected rules would do to them.

    python -m bench.citation_misses eval-out/s22/dev3.record.jsonl [--qa data/qa/llm-notes-zh.dev.jsonl]

Prints, for the answered answerable questions of a recorded run (rag.eval answers --config record.toml):
- every citation the run judged irrelevant (`relevant` false), with its answer's key-phrase recall and the
  sources whose text holds the labelled evidence or a restatement (`gold`);
- "later sentences citing other sources": sentences after the first that cite none of the first sentence's
  sources, counted as misses / hits - what cutting them would remove;
- "question-cosine gap": cited sentences whose source lies more than 0.03 below the question's best source by
  e5 cosine (rag.cite.statements of each source), misses / hits;
- the lexicon's scores (rag.lexicon) for hand-made Chinese translations of English sources, the direction the
  citation rules leave alone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from rag.cite import marker_numbers, split_sentences, statements
from rag.embed import load_embedder
from rag.eval.qa import load_qa
from rag.settings import load_settings
from rag.text import strip_all_space

GAP = 0.03
ZH_EN = [("P0 事故的响应时间是 15 分钟。", "P0 incidents must be acknowledged within 15 minutes by the on-call engineer."),
         ("文档被切分为每块512个字符的文本块。", "Documents are split into chunks of 512 characters, with an overlap of 64 characters."),
         ("团队每周五下午开会。", "P0 incidents must be acknowledged within 15 minutes by the on-call engineer.")]


def zh_en_overlap(sentence: str, source: str) -> float:
    """Share of a Chinese sentence's words (jieba, 2+ characters) with an English equivalent in the source."""
    from rag.lexicon import lexicon
    from rag.text import CJK_CHAR, tokenize

    english = {}
    for stem, words in lexicon().items():
        for word in words:
            english.setdefault(word, set()).add(stem)
    words = [w for w in tokenize(sentence) if CJK_CHAR.search(w) and len(w) >= 2]
    stems = set(tokenize(source))
    return sum(bool(english.get(w, set()) & stems) for w in words) / len(words) if words else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("rows", type=Path)
    parser.add_argument("--qa", type=Path, default=Path("data/qa/llm-notes-zh.dev.jsonl"))
    args = parser.parse_args(argv)
    items = {i.id: i for i in load_qa(args.qa)}
    rows = [json.loads(line) for line in args.rows.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if r["answerable"] and not r["refused"]]
    embed = load_embedder(load_settings()).encode_queries
    later, gap, judged, missed, wrong_answer = [0, 0], [0, 0], 0, 0, 0
    for r in rows:
        item = items[r["id"]]
        needles = [strip_all_space(e) for e in (*item.evidence, *item.restated)]
        gold = [e["n"] for e in r["evidence"] if any(n in strip_all_space(e["text"]) for n in needles)]
        verdicts = [c for c in r["citations"] if c["relevant"] is not None]
        judged += len(verdicts)
        wrong_answer += sum(c["relevant"] for c in verdicts) if r["verdicts"]["phrase_recall"] == 0 else 0
        bad = [c["n"] for c in verdicts if not c["relevant"]]
        missed += len(bad)
        if bad:
            print(f"{r['id']}: missed {bad}, gold {gold}, recall {r['verdicts']['phrase_recall']}: {r['answer'][:90]!r}")
        sentences = [s for s in split_sentences(r["answer"]) if marker_numbers(s)]
        if not sentences:
            continue
        first = set(marker_numbers(sentences[0]))
        numbers = [e["n"] for e in r["evidence"]]
        vectors = np.asarray(embed([r["standalone_question"]] + [statements(e["text"]) for e in r["evidence"]]))
        closeness = dict(zip(numbers, vectors[1:] @ vectors[0], strict=True))
        for i, s in enumerate(sentences):
            cited = [n for n in marker_numbers(s) if n in closeness]
            hit = int(any(n in gold for n in cited))
            if i and not set(cited) & first:
                later[hit] += 1
            if cited and max(closeness.values()) - max(closeness[n] for n in cited) > GAP:
                gap[hit] += 1
    print(f"citations judged {judged}, missed {missed}, precision {1 - missed / judged:.3f}; "
          f"judged correct in answers with key-phrase recall 0: {wrong_answer}")
    print(f"later sentences citing other sources: {later[0]} missing / {later[1]} holding the evidence")
    print(f"question-cosine gap > {GAP}: {gap[0]} missing / {gap[1]} holding the evidence (sentences)")
    for zh, en in ZH_EN:
        print(f"zh -> en lexicon overlap {zh_en_overlap(zh, en):.2f}: {zh} / {en}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
