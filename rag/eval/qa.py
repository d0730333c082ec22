"""The QA file format (JSON Lines) and the rule that decides whether a chunk is relevant."""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rag.records import Chunk
from rag.text import normalize, script_counts, strip_all_space

KeyPhrase = str | list[str]  # a key phrase, or its equivalent wordings (any one of them counts)


@dataclass(frozen=True)
class QAItem:
    """One labelled question."""

    id: str
    question: str
    answers: list[KeyPhrase] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    restated: list[str] = field(default_factory=list)  # the same fact stated elsewhere (bench.restated_evidence)
    answerable: bool = True
    doc_ids: list[str] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    reference: str = ""


def jsonl_rows(path: Path, what: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) of each non-blank line; bad JSON is an error naming the file and line."""
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not a valid {what}: {e}") from e


def load_qa(path: Path) -> list[QAItem]:
    """Read a QA file; a malformed line is an error naming the file and line."""
    items = []
    for n, row in jsonl_rows(path, "QA item"):
        try:
            items.append(QAItem(**{k: v for k, v in row.items() if k in QAItem.__dataclass_fields__}))
        except TypeError as e:
            raise ValueError(f"{path}:{n}: not a valid QA item: {e}") from e
    return items


class StrippedDoc:
    """A document with all whitespace removed and a map back to original offsets."""

    def __init__(self, text: str) -> None:
        chars, self.positions = [], []
        for i, ch in enumerate(text):
            for out in normalize(ch):  # NFKC per character keeps a map to the original offset
                if not out.isspace():
                    chars.append(out)
                    self.positions.append(i)
        self.text = "".join(chars)

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Original [start, end) to stripped [start, end)."""
        return bisect.bisect_left(self.positions, start), bisect.bisect_left(self.positions, end)

    def occurrences(self, needle: str) -> list[tuple[int, int]]:
        """Stripped spans of every occurrence of `needle` (already stripped)."""
        out, at = [], self.text.find(needle)
        while at >= 0 and needle:
            out.append((at, at + len(needle)))
            at = self.text.find(needle, at + 1)
        return out


class RelevanceJudge:
    """Decides chunk relevance for QA items against one knowledge base's documents."""

    def __init__(self, documents: dict[str, str]) -> None:
        self._raw = documents
        self._stripped: dict[str, StrippedDoc] = {}

    def _doc(self, doc_id: str) -> StrippedDoc | None:
        if doc_id not in self._stripped and doc_id in self._raw:
            self._stripped[doc_id] = StrippedDoc(self._raw[doc_id])
        return self._stripped.get(doc_id)

    def relevant(self, item: QAItem, chunk: Chunk, *, restated: bool = False) -> bool:
        """Contains an evidence string, covers half of an occurrence of one, or is in doc_ids; with
        `restated`, the item's restatements of its evidence count as evidence too (citations: a passage
        that states the fact holds it wherever the notes say it)."""
        if chunk.doc_id in item.doc_ids:
            return True
        body = strip_all_space(chunk.text)
        needles = [strip_all_space(e) for e in (*item.evidence, *(item.restated if restated else ())) if e.strip()]
        if any(n in body for n in needles):
            return True
        doc = self._doc(chunk.doc_id) if needles else None
        if doc is None:
            return False
        lo, hi = doc.span(chunk.start, chunk.end)
        for needle in needles:
            for s, e in doc.occurrences(needle):
                if min(hi, e) - max(lo, s) >= (e - s) / 2:
                    return True
        return False


def answer_phrase_recall(answer: str, phrases: Sequence[KeyPhrase]) -> float:
    """Share of key phrases present in the answer; a phrase given as a list is present when any of its
    wordings is (the notes' Chinese words and their English rendering, for a question asked in English)."""
    if not phrases:
        return 0.0
    return sum(any(phrase_present(w, answer) for w in _wordings(p)) for p in phrases) / len(phrases)


def phrase_present(wording: str, text: str) -> bool:
    """A wording with Chinese in it matches after NFKC, whitespace and case folding; an all-Latin one
    ("supervised", "sum to 1") from the start of a word, spaces collapsed, so "supervised" is not
    found in "unsupervised"."""
    if script_counts(wording)[0]:
        return strip_all_space(wording).lower() in strip_all_space(text).lower()
    spaced = " ".join(normalize(wording).lower().split())
    return re.search(rf"(?<![a-z0-9]){re.escape(spaced)}", " ".join(normalize(text).lower().split())) is not None


def _wordings(phrase: KeyPhrase) -> list[str]:
    return [phrase] if isinstance(phrase, str) else list(phrase)


def char_f1(prediction: str, reference: str) -> float:
    """Character-level F1 (whitespace removed, NFKC, lower-cased), the usual Chinese QA measure."""
    pred = list(strip_all_space(normalize(prediction)).lower())
    ref = list(strip_all_space(normalize(reference)).lower())
    if not pred or not ref:
        return 0.0
    counts: dict[str, int] = {}
    for ch in ref:
        counts[ch] = counts.get(ch, 0) + 1
    common = 0
    for ch in pred:
        if counts.get(ch, 0) > 0:
            common += 1
            counts[ch] -= 1
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)
