"""Structural parsing of cleaned text: headings, paragraphs, lists, tables, code and formulas as
blocks with stripped character spans, and Chinese-aware sentence spans inside them.

Headings come from markdown ``#`` lines or, in plain text, from heuristics: numbering ("第一章",
"一、", "1.2", "(1)", "Step 3"), a short first line, short unpunctuated lines and questions.
`ingest.chunk` groups these blocks and sentences into chunks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

LEAF = 9  # level of question headings: always the innermost heading

_MD_HEADING = re.compile(r" {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$")
FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_BULLET = re.compile(r"\s*(?:[-*+•·▪●◦]|\d{1,3}[.)]|[(（]\d{1,3}[)）])\s+(?=\S)")
_SYMBOL_BULLET = re.compile(r"\s*[-*+•·▪●◦]\s+")
_CHECKBOX = re.compile(r"\[[ xX]\]")
_TAB_ROW = re.compile(r"\S\t+\S")
_WORDY = re.compile(r"[\w\u3400-\u9fff]{2}")
_CJK = re.compile(r"[\u3400-\u9fff]")
_CODEY = re.compile(r"[=(){}\[\];<>]|^\s*(?:def|class|import|from|return|for|if|print)\b", re.M)
# plain-text numbering -> heading level (None: 3 + depth of "1.2.3")
_NUMBERING: list[tuple[re.Pattern, int | None]] = [
    (re.compile(r"第[一二三四五六七八九十百\d]+[章节篇部分]"), 1),
    (re.compile(r"[一二三四五六七八九十]+[、.]"), 2),
    (re.compile(r"(\d{1,2}(?:\.\d{1,2})*)(?:[.、]\s*|\s+)(?=\S)"), None),
    (re.compile(r"[(（][一二三四五六七八九十\d]{1,2}[)）]"), 6),
    (re.compile(r"step\s*\d+\s*[.:、]?", re.I), 6),
]
PLAIN_LEVEL = 7  # unnumbered short-line headings of plain text
_END_PUNCT = tuple("。.,;:、!") + ("…",)
_INNER_PUNCT = re.compile(r"[。,;:]|://")
_CLOSERS = "”’」』】》)]"
_ABBREV = re.compile(
    r"(?:(?<![A-Za-z])(?:[A-Za-z]\.){1,3}[A-Za-z]?|\b(?:Mr|Mrs|Ms|Dr|Prof|Sr|Jr|St|vs|Fig|fig|No|Inc|Ltd|"
    r"al|approx|cf|Eq|eq|resp)\.)$"
)
_LIST_NUMBER = re.compile(r"\s*(?:step\s*)?\d{1,3}(?:\.\d+)*\s*$", re.I)
_SENT_END = re.compile(r"\n|\.{3,}|…+|。+|[!?;]+|\.")


@dataclass(frozen=True)
class Block:
    """One structural block: kind, stripped char span, and level/title for headings."""

    kind: str  # heading | paragraph | list | table | code | formula
    start: int
    end: int
    level: int = 0
    title: str = ""


def strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    """The span text[start:end] with surrounding whitespace removed; (end, end) when it is all blank."""
    piece = text[start:end]
    return (start + len(piece) - len(piece.lstrip()), start + len(piece.rstrip())) if piece.strip() else (end, end)


def _short_line(line: str) -> bool:
    s = line.strip()
    return (not line[:1].isspace() and len(s) <= 30 and not s.endswith(_END_PUNCT)
            and not _INNER_PUNCT.search(s) and not _SYMBOL_BULLET.match(line) and bool(_WORDY.search(s)))


def _question(line: str) -> str | None:
    bullet = _SYMBOL_BULLET.match(line)
    s = line[bullet.end():].strip() if bullet else line.strip()
    return s if s.endswith("?") and len(s) <= 80 and "。" not in s and not _CHECKBOX.match(s) and "[[" not in s else None


def _numbering(line: str) -> tuple[int, int] | None:
    """(pattern index, heading level) of a numbered plain-text line."""
    for i, (pattern, level) in enumerate(_NUMBERING):
        if m := pattern.match(line):
            return i, level if level is not None else 3 + m.group(1).count(".")
    return None


def _heading(line: str, nxt: str | None, first: bool, plain: bool) -> tuple[int, str] | None:
    """(level, title) when the line is a heading, given the next non-blank line."""
    m = _MD_HEADING.match(line)
    if m:
        return len(m.group(1)), m.group(2).strip()
    if nxt is None:
        return None  # a heuristic heading needs a body after it
    q = _question(line)
    if q and not _question(nxt) and not (_SYMBOL_BULLET.match(line) and _SYMBOL_BULLET.match(nxt)):
        return LEAF, q
    s = line.strip()
    if not plain or line[:1].isspace() or len(s) > 40 or s.endswith(_END_PUNCT) or "。" in s:
        return None
    if first and bool(_WORDY.search(s)):
        return 1, s
    num = _numbering(s)
    if num:
        nxt_num = _numbering(nxt.strip())
        return None if nxt_num == num and not nxt[:1].isspace() else (num[1], s)  # else a list
    if _short_line(line) and not _short_line(nxt) and not _BULLET.match(line):
        return PLAIN_LEVEL, s
    return None


def _run(raw: list[str], j: int, keep: Callable[[str], bool]) -> int:
    """Index of the last line of the run of lines after j that satisfy `keep`."""
    while j + 1 < len(raw) and keep(raw[j + 1]):
        j += 1
    return j


def _atomic_end(raw: list[str], i: int) -> tuple[int, str] | None:
    """(last line index, kind) when a code block, formula or table starts at line i."""
    line, s, n = raw[i], raw[i].strip(), len(raw)
    fence = FENCE.match(line)
    if fence:
        mark = fence.group(1)
        closing = (j for j in range(i + 1, n) if raw[j].strip().startswith(mark) and not raw[j].strip(mark[0] + " \t"))
        return next(closing, n - 1), "code"
    if s.startswith("$$"):
        single = len(s) > 4 and s.endswith("$$")
        return (i if single else next((j for j in range(i + 1, n) if raw[j].strip().endswith("$$")), i)), "formula"
    if s.startswith("|"):
        return _run(raw, i, lambda r: r.strip().startswith("|")), "table"
    if _TAB_ROW.search(line) and i + 1 < n and _TAB_ROW.search(raw[i + 1]):
        return _run(raw, i, lambda r: bool(_TAB_ROW.search(r))), "table"
    if line.startswith(("    ", "\t")) and not _BULLET.match(line):
        j = _run(raw, i, lambda r: r.startswith(("    ", "\t")) or not r.strip())
        while not raw[j].strip():
            j -= 1
        body = "\n".join(raw[i : j + 1])
        if _CODEY.search(body) and len(_CJK.findall(body)) * 10 < len(body.strip()):
            return j, "code"
    return None


def split_blocks(text: str) -> list[Block]:
    """Structural parse into heading / paragraph / list / table / code / formula blocks."""
    spans = [(m.start(), m.start() + len(m.group(0).rstrip("\n"))) for m in re.finditer(r".*(?:\n|$)", text)]
    spans = [s for s in spans if s[0] < len(text)]
    raw = [text[a:b] for a, b in spans]
    n = len(raw)
    nxt_idx = [n] * (n + 1)
    for k in range(n - 1, -1, -1):
        nxt_idx[k] = k if raw[k].strip() else nxt_idx[k + 1]
    plain = not any(_MD_HEADING.match(r) for r in raw)

    def heading(k: int) -> tuple[int, str] | None:
        m = nxt_idx[k + 1]
        return _heading(raw[k], raw[m] if m < n else None, k == nxt_idx[0], plain)

    def starts_block(k: int) -> bool:
        return bool(_atomic_end(raw, k) or _BULLET.match(raw[k]) or heading(k))

    blocks: list[Block] = []
    i = nxt_idx[0]
    while i < n:
        atomic, head = _atomic_end(raw, i), heading(i)
        if atomic:
            j, kind = atomic
        elif head:
            j, kind = i, "heading"
        elif _BULLET.match(raw[i]):
            j, kind = i, "list"
            # items, indented continuations and blank lines between them
            while (k := nxt_idx[j + 1]) < n and (raw[k][:1].isspace() or _BULLET.match(raw[k])):
                if heading(k) or _atomic_end(raw, k):
                    break
                j = k
        else:
            j, kind = i, "paragraph"
            while j + 1 < n and raw[j + 1].strip() and not starts_block(j + 1):
                j += 1
        start, end = strip_span(text, spans[i][0], spans[j][1])
        blocks.append(Block(kind, start, end, *(head if kind == "heading" and head else (0, ""))))
        i = nxt_idx[j + 1]
    return blocks


def _soft_end(ch: str) -> bool:
    """Whether a character may follow a sentence end (space, end, CJK, closing mark)."""
    return ch == "" or ch.isspace() or "\u3000" <= ch <= "\u9fff" or ch in _CLOSERS or ch in "\"'"


def _boundary(text: str, sent_start: int, m: re.Match) -> bool:
    mark, p, after = m.group(0), m.start(), text[m.end() : m.end() + 1]
    if mark == "\n" or mark[0] in "。…":
        return True
    if mark != "." or not _soft_end(after):
        return _soft_end(after)  # no end inside 3.14, e.g, URLs, a;b, ",..., "
    if p == 0 or text[p - 1].isspace() or (p - sent_start <= 12 and _LIST_NUMBER.match(text, sent_start, p)):
        return False  # " . . ." and "1." / "Step 2." list markers
    return not _ABBREV.search(text[max(sent_start, p - 12) : p + 1])


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Chinese-aware sentence spans (stripped, non-empty); closing quotes/brackets stay attached."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _SENT_END.finditer(text):
        if m.start() < start or not _boundary(text, start, m):
            continue
        end = m.end() if m.group(0) != "\n" else m.start()
        while end < len(text) and (text[end] in _CLOSERS or
                                   (text[end] in "\"'" and _soft_end(text[end + 1 : end + 2]))):
            end += 1
        spans.append(strip_span(text, start, end))
        start = end
    spans.append(strip_span(text, start, len(text)))
    return [(a, b) for a, b in spans if a < b]
