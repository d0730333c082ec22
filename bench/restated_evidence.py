"""Places where the notes state a labelled evidence sentence a second time, in other words.

The scraped notes repeat themselves: "知识蒸馏是一种将大型复杂模型的知识转移到小型模型中的方法" is the
labelled evidence of zh-051, and a summary list further down says "知识蒸馏是一种将大型模型的知识转移到小型模型中
的方法,以减少模型的大小和计算量". An answer citing the summary cites a passage that holds the fact, yet the
citation judge, which looks only for the labelled string, counts it wrong.

`python -m bench.restated_evidence [--qa data/qa/llm-notes-zh.dev.jsonl] [--min 0.7]` prints, for each
evidence string of each answerable question, the corpus sentences elsewhere that hold at least `--min` of
its character bigrams. Those reviewed by hand as stating the same fact are the items' `restated`
strings (session 21: all 15 found at 0.7; session 22: the 14 more found at 0.6, of which 3 state the
same fact, for zh-014, zh-051 and fu-012; session 23: three found by reading a run's missed citations, below
this script's reach - fu-011, fu-012 and zh-019, README): the citation judge accepts them
(rag.eval.answers.cited_relevant); retrieval metrics keep `evidence` alone, so their figures compare with earlier runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rag.eval.qa import load_qa
from rag.text import normalize, sentence_spans, strip_all_space


def bigrams(text: str) -> set[str]:
    flat = strip_all_space(normalize(text))
    return {flat[i:i + 2] for i in range(len(flat) - 1)}


def corpus_sentences(corpus: Path) -> list[tuple[str, str]]:
    """(file name, sentence) of every sentence of 8+ characters, each text once."""
    seen, out = set(), []
    for path in sorted(corpus.glob("*.txt")):
        text = normalize(path.read_text(encoding="utf-8"))
        for start, end in sentence_spans(text):
            for line in text[start:end].splitlines():
                line = line.strip()
                if len(line) >= 8 and line not in seen:
                    seen.add(line)
                    out.append((path.name, line))
    return out


def restatements(evidence: str, sentences: list[tuple[str, str]], minimum: float) -> list[tuple[float, str, str]]:
    """Sentences (not the evidence itself, nor a piece of it) holding >= `minimum` of its bigrams."""
    wanted, flat = bigrams(evidence), strip_all_space(normalize(evidence))
    out = []
    for name, sentence in sentences:
        body = strip_all_space(sentence)
        if flat in body or body in flat:
            continue
        share = len(wanted & bigrams(sentence)) / max(1, len(wanted))
        if share >= minimum:
            out.append((round(share, 2), name, sentence))
    return sorted(out, reverse=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--qa", type=Path, default=Path("data/qa/llm-notes-zh.dev.jsonl"))
    parser.add_argument("--corpus", type=Path, default=Path("../shared/corpus/llm-notes-zh"))
    parser.add_argument("--min", type=float, default=0.7)
    args = parser.parse_args(argv)
    sentences = corpus_sentences(args.corpus)
    found = 0
    for item in load_qa(args.qa):
        for evidence in item.evidence if item.answerable else ():
            hits = restatements(evidence, sentences, args.min)
            if hits:
                found += 1
                print(f"{item.id} | {evidence}")
                for share, name, sentence in hits:
                    mark = "labelled" if any(strip_all_space(normalize(r)) in strip_all_space(sentence) for r in item.restated) else ""
                    print(f"    {share:.2f} {name} {sentence[:120]} {mark}")
    print(f"{found} evidence strings restated elsewhere")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
