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

import bisect
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

# Block, split_blocks and split_sentences are also imported from here (tests, bench)
from ingest.structure import FENCE, LEAF, PLAIN_LEVEL, Block, split_blocks, split_sentences, strip_span
from rag.records import Chunk

TokenCounter = Callable[[list[str]], list[int]]

_TEXT_KINDS = ("paragraph", "list")


@dataclass(frozen=True)
class ChunkConfig:
    """Chunk sizes, in embedder tokens."""

    chunk_tokens: int = 200  # target size
    overlap_tokens: int = 32  # overlap between consecutive chunks of the same section
    max_tokens: int = 480  # hard cap (embedder limit is 512 incl. prefix)

    def __post_init__(self) -> None:
        if not 0 <= self.overlap_tokens < self.chunk_tokens <= self.max_tokens:
            raise ValueError(f"need 0 <= overlap_tokens < chunk_tokens <= max_tokens, got {self}")


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
                if stack and stack[-1][0] == PLAIN_LEVEL and len(sections[-1].units) > 1:
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
    if fence := FENCE.match(first):
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
        a, b = strip_span(text, pos, cut)
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
            pieces.append(_Unit(*strip_span(text, cur_start, pos - 1), "atomic", size))
            cur_start, size = pos, 0
        pos, size = pos + len(line) + 1, size + t
    pieces.append(_Unit(*strip_span(text, cur_start, unit.end), "atomic", size))
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
    doc_id: str, source: str, text: str, *, count_tokens: TokenCounter, config: ChunkConfig = ChunkConfig(),
    pages: Sequence[tuple[int, int]] = (),
) -> list[Chunk]:
    """Heading-aware chunks of one cleaned document (see the module docstring for the offset contract).

    `pages`: (page number, start offset in `text`) of a paged document; each chunk gets the pages its body spans."""
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
        chunks.append(Chunk(chunk_id(doc_id, body, ordinal), doc_id, body, source, path, first.start, last.end,
                            *_pages_of(pages, first.start, last.end)))
    return chunks


def _pages_of(pages: Sequence[tuple[int, int]], start: int, end: int) -> tuple:
    """(first page, last page, later pages' (number, start) inside) of the span [start, end); no pages: (None, None, ())."""
    if not pages:
        return None, None, ()
    starts = [s for _, s in pages]
    first = max(bisect.bisect_right(starts, start) - 1, 0)
    last = max(bisect.bisect_right(starts, max(end - 1, start)) - 1, first)
    return pages[first][0], pages[last][0], tuple((n, s) for n, s in pages[first + 1:last + 1])
