"""Split cleaned document text into heading-aware, sentence-packed chunks with exact offsets.

Offset contract, for every chunk ``c`` of a document ``doc``::

    c.text == prefix + doc[c.start:c.end] + suffix

``doc[c.start:c.end]`` is the chunk's own body (whitespace-stripped, never empty). ``prefix`` is ""
when the body starts with its section's heading line, else (a continuation chunk) the nearest
heading title plus a newline: ``c.heading_path[-1] + "\\n"``. Only the pieces of an oversized code
block / formula / table (split on line boundaries as a last resort) add more: the re-opened fence
(or the table's header rows) ends ``prefix`` and the closing fence is ``suffix``; else ``suffix == ""``.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from rag.records import Chunk

TokenCounter = Callable[[list[str]], list[int]]

LEAF = 9  # level of question headings: always the innermost heading
_TEXT_KINDS = ("paragraph", "list")

_MD_HEADING = re.compile(r" {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
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
_PLAIN_LEVEL = 7  # unnumbered short-line headings of plain text
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
class ChunkConfig:
    """Chunk sizes, in embedder tokens."""

    chunk_tokens: int = 200  # target size
    overlap_tokens: int = 32  # overlap between consecutive chunks of the same section
    max_tokens: int = 480  # hard cap (embedder limit is 512 incl. prefix)

    def __post_init__(self) -> None:
        if not 0 <= self.overlap_tokens < self.chunk_tokens <= self.max_tokens:
            raise ValueError(f"need 0 <= overlap_tokens < chunk_tokens <= max_tokens, got {self}")


@dataclass(frozen=True)
class Block:
    """One structural block: kind, stripped char span, and level/title for headings."""

    kind: str  # heading | paragraph | list | table | code | formula
    start: int
    end: int
    level: int = 0
    title: str = ""


@dataclass
class _Unit:
    start: int
    end: int
    kind: str  # heading | text | atomic
    tokens: int = 0
    prefix: str = ""  # re-opened fence / table header of a piece of a split atomic block
    suffix: str = ""  # re-closed fence


@dataclass
class _Section:
    path: tuple[str, ...]
    level: int
    units: list[_Unit] = field(default_factory=list)
    groups: list[list[_Unit]] = field(default_factory=list)
    head: int = 0  # tokens of the heading line prefixed to continuation chunks


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
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
        return _PLAIN_LEVEL, s
    return None


def _run(raw: list[str], j: int, keep: Callable[[str], bool]) -> int:
    """Index of the last line of the run of lines after j that satisfy `keep`."""
    while j + 1 < len(raw) and keep(raw[j + 1]):
        j += 1
    return j


def _atomic_end(raw: list[str], i: int) -> tuple[int, str] | None:
    """(last line index, kind) when a code block, formula or table starts at line i."""
    line, s, n = raw[i], raw[i].strip(), len(raw)
    fence = _FENCE.match(line)
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
        start, end = _strip_span(text, spans[i][0], spans[j][1])
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
        spans.append(_strip_span(text, start, end))
        start = end
    spans.append(_strip_span(text, start, len(text)))
    return [(a, b) for a, b in spans if a < b]


def chunk_id(doc_id: str, text: str, ordinal: int) -> str:
    """16 hex chars of sha256(doc_id, text[, ordinal when the same text repeats in the doc])."""
    key = f"{doc_id}\x00{text}" + (f"\x00{ordinal}" if ordinal else "")
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def _sections(text: str, blocks: list[Block]) -> list[_Section]:
    """Group blocks under their heading stack; text blocks become sentence units."""
    stack: list[tuple[float, str, bool]] = []  # (level, title, is a question)
    sections = [_Section((), 0)]
    for b in blocks:
        if b.kind == "heading":
            question = b.level == LEAF
            if question:  # a question closes the previous question and everything under it
                del stack[next((k for k, e in enumerate(stack) if e[2]), len(stack)) :]
                if stack and stack[-1][0] == _PLAIN_LEVEL and len(sections[-1].units) > 1:
                    stack.pop()  # an unnumbered heading with a body of its own is not the question's parent
            elif stack and stack[-1][2] and b.level > 2 and len(sections[-1].units) == 1:
                stack[-1] = (b.level - 0.5, stack[-1][1], True)  # a body-less question adopts sub-headings
            while stack and stack[-1][0] >= b.level:
                stack.pop()
            stack.append((b.level, b.title, question))
            sections.append(_Section(tuple(e[1] for e in stack), b.level, [_Unit(b.start, b.end, "heading")]))
        elif b.kind in _TEXT_KINDS:
            spans = split_sentences(text[b.start : b.end])
            sections[-1].units += [_Unit(b.start + s, b.start + e, "text") for s, e in spans]
        else:
            sections[-1].units.append(_Unit(b.start, b.end, "atomic"))
    sections = [s for s in sections if s.units]
    # a heading with no body of its own opens the next section's first chunk
    for k in range(len(sections) - 1):
        if all(u.kind == "heading" for u in sections[k].units):
            sections[k + 1].units[:0] = sections[k].units
            sections[k].units = []
    return [s for s in sections if s.units]


def _fences(text: str, unit: _Unit) -> tuple[str, str]:
    """(re-opening prefix, closing suffix) for the pieces of a split atomic block."""
    first, second = (text[unit.start : unit.end].split("\n") + [""])[:2]
    if fence := _FENCE.match(first):
        return first.strip() + "\n", "\n" + fence.group(1)
    if first.strip().startswith("$$"):
        return "$$\n", "\n$$"
    table = first.startswith("|") and second.strip() and set(second.strip()) <= set("|-: ")
    return (f"{first}\n{second}\n" if table else ""), ""


def _split_text(text: str, unit: _Unit, limit: int) -> list[_Unit]:
    """Cut an oversized sentence into near-equal character slices, at a space or comma if near."""
    n = math.ceil(unit.tokens / max(1, limit))
    length = math.ceil((unit.end - unit.start) / n)
    pieces, pos = [], unit.start
    while pos < unit.end:
        cut = min(unit.end, pos + length)
        if cut < unit.end:
            soft = max(text.rfind(c, pos + length * 3 // 4, cut) for c in " ,、")
            cut = soft + 1 if soft > pos else cut
        a, b = _strip_span(text, pos, cut)
        if a < b:
            share = math.ceil(unit.tokens * (b - a) / (unit.end - unit.start))
            pieces.append(_Unit(a, b, "text", share))
        pos = cut
    return pieces


def _split_atomic(text: str, unit: _Unit, limit: int, line_tokens: dict[str, int]) -> list[_Unit]:
    """Cut an oversized code block / table / formula on line boundaries, re-fencing each piece."""
    opener, closer = _fences(text, unit)
    budget = max(1, limit - sum(line_tokens.get(x, 0) + 1 for x in (opener + closer).split("\n")))
    pieces: list[_Unit] = []
    pos, size, cur_start = unit.start, 0, unit.start
    for line in text[unit.start : unit.end].split("\n"):
        t = line_tokens.get(line, 0) + 1
        if size and size + t > budget:
            pieces.append(_Unit(*_strip_span(text, cur_start, pos - 1), "atomic", size))
            cur_start, size = pos, 0
        pos, size = pos + len(line) + 1, size + t
    pieces.append(_Unit(*_strip_span(text, cur_start, unit.end), "atomic", size))
    out: list[_Unit] = []
    for k, p in enumerate(pieces):
        p.prefix, p.suffix = (opener if k else ""), (closer if k < len(pieces) - 1 else "")
        out += _split_text(text, p, limit) if p.tokens > limit else [p]
    return out


def _count(text: str, sections: list[_Section], count_tokens: TokenCounter, config: ChunkConfig) -> None:
    """Count every unit and heading title in one batch, then cut units over the hard cap."""
    units = [u for s in sections for u in s.units]
    titles = sorted({s.path[-1] for s in sections if s.path})
    counts = count_tokens([text[u.start : u.end] for u in units] + titles)
    for u, t in zip(units, counts, strict=False):
        u.tokens = t
    title_tokens = dict(zip(titles, counts[len(units) :], strict=True))
    for s in sections:
        s.head = title_tokens[s.path[-1]] + 1 if s.path else 0
    big = [(s, u) for s in sections for u in s.units if u.tokens > config.max_tokens - s.head]
    lines = sorted({ln for _, u in big if u.kind == "atomic" for ln in text[u.start : u.end].split("\n")})
    line_tokens = dict(zip(lines, count_tokens(lines), strict=True)) if lines else {}
    for s, u in big:
        limit = config.max_tokens - s.head - 8
        pieces = _split_atomic(text, u, limit, line_tokens) if u.kind == "atomic" else _split_text(text, u, limit)
        i = next(k for k, x in enumerate(s.units) if x is u)
        s.units[i : i + 1] = pieces


def _overlap(group: list[_Unit], budget: int) -> list[_Unit]:
    """Whole trailing sentences of a chunk worth about `budget` tokens (at least one if <= 2x)."""
    out: list[_Unit] = []
    size = 0
    for u in reversed(group):
        if u.kind != "text" or (size + u.tokens > budget and (out or u.tokens > 2 * budget)):
            break
        out.insert(0, u)
        size += u.tokens
    return out if len(out) < len(group) else []


def _pack(section: _Section, config: ChunkConfig) -> list[list[_Unit]]:
    """Greedy packing of a section's units; a heading never ends a chunk."""
    groups: list[list[_Unit]] = []
    cur: list[_Unit] = []
    size = 0
    for u in section.units:
        if any(x.kind != "heading" for x in cur) and size + u.tokens > config.chunk_tokens:
            groups.append(cur)
            cur = _overlap(cur, config.overlap_tokens) if config.overlap_tokens else []
            size = section.head + sum(x.tokens for x in cur)
            if cur and size + u.tokens > config.chunk_tokens:
                cur, size = [], section.head
        cur.append(u)
        size += u.tokens
    groups.append(cur)
    return groups


def _merge_tiny(sections: list[_Section], config: ChunkConfig) -> list[tuple[tuple[str, ...], list[_Unit]]]:
    """(path, units) per chunk; tiny sibling sections merge, never across a top-level heading."""
    top = min((s.level for s in sections if s.level), default=0)
    out: list[tuple[tuple[str, ...], list[_Unit]]] = []
    prev: _Section | None = None  # the last section merged-into, if it may take more
    for s in sections:
        size = sum(u.tokens for u in s.units)
        single = len(s.groups) == 1 and sum(u.kind == "heading" for u in s.units) == 1 and size < config.chunk_tokens / 4
        if (single and prev is not None and s.level == prev.level and s.level != top
                and s.path[:-1] == prev.path[:-1]
                and sum(u.tokens for u in out[-1][1]) + size <= config.chunk_tokens):
            out[-1] = (s.path[:-1], out[-1][1] + s.units)
            continue
        out += [(s.path, g) for g in s.groups]
        prev = s if single and s.level else None
    return out


def chunk_document(
    doc_id: str, source: str, text: str, *, count_tokens: TokenCounter, config: ChunkConfig = ChunkConfig()
) -> list[Chunk]:
    """Heading-aware chunks of one cleaned document (see the module docstring for the offset contract)."""
    if not text.strip():
        return []
    sections = _sections(text, split_blocks(text))
    _count(text, sections, count_tokens, config)
    for s in sections:
        s.groups = _pack(s, config)
    chunks: list[Chunk] = []
    seen: dict[str, int] = {}
    for path, units in _merge_tiny(sections, config):
        first, last = units[0], units[-1]
        prefix = path[-1] + "\n" if path and first.kind != "heading" else ""
        body = prefix + first.prefix + text[first.start : last.end] + last.suffix
        seen[body] = ordinal = seen.get(body, -1) + 1
        chunks.append(Chunk(chunk_id(doc_id, body, ordinal), doc_id, body, source, path, first.start, last.end))
    return chunks
