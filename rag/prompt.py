"""Prompt templates from `prompts/`, context packing into numbered sources, chat messages.

A template file starts with `<!-- variables: a, b -->` and holds `{a}`-style placeholders; chat
templates split into parts with `<!-- role: system -->` / `<!-- role: user -->` lines. Special
tokens never appear here: messages go to the server as role/content and it applies the model's
own chat template.
"""

from __future__ import annotations

import functools
import logging
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rag.records import Chunk, Hit
from rag.text import CITATION_MARK, language

logger = logging.getLogger(__name__)

PROMPTS_DIR = Path(__file__).resolve().parents[1] / "prompts"
ADJACENT_GAP = 2  # chunks of one document at most this many characters apart are merged
HISTORY_CHARS = 600  # each earlier message is cut to this many characters in the prompt

_VARIABLES = re.compile(r"^\s*<!--\s*variables:(.*?)-->\s*\n", re.S)
_ROLE = re.compile(r"^<!--\s*role:\s*(system|user|assistant)\s*-->\s*$", re.M)
_SOURCE_TAG = re.compile(r"</?\s*source\b", re.I)


# --- templates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """A prompt file: declared variables and (role, text) parts."""

    name: str
    variables: frozenset[str]
    parts: tuple[tuple[str, str], ...]  # role is "text" for files without role markers

    def used_variables(self) -> set[str]:
        """The placeholders the text actually uses."""
        return {field for _, text in self.parts for _, field, _, _ in string.Formatter().parse(text) if field}

    def _values(self, values: dict) -> dict:
        if set(values) != self.variables:
            raise ValueError(
                f"template {self.name} takes variables {sorted(self.variables)}, got {sorted(values)}"
            )
        return values

    def messages(self, **values) -> list[dict]:
        """Render a chat template into [{"role", "content"}, ...]."""
        values = self._values(values)
        return [{"role": role, "content": text.format(**values)} for role, text in self.parts]

    def text(self, **values) -> str:
        """Render a plain-text template."""
        values = self._values(values)
        return "\n".join(text.format(**values) for _, text in self.parts)


def parse_template(name: str, raw: str) -> Template:
    """Parse template file text (see the module docstring for the format)."""
    declared = _VARIABLES.match(raw)
    if not declared:
        raise ValueError(f"template {name} must start with <!-- variables: ... -->")
    variables = frozenset(v.strip() for v in declared.group(1).split(",") if v.strip())
    body = raw[declared.end():]
    pieces = _ROLE.split(body)  # [before, role1, text1, role2, text2, ...]
    if len(pieces) == 1:
        parts = (("text", body.strip()),)
    else:
        parts = tuple((role, text.strip()) for role, text in zip(pieces[1::2], pieces[2::2], strict=True))
    return Template(name, variables, parts)


@functools.lru_cache(maxsize=32)
def load_template(name: str) -> Template:
    """Load `prompts/<name>.md`, e.g. `qa.zh`."""
    path = PROMPTS_DIR / f"{name}.md"
    if not path.is_file():
        raise FileNotFoundError(f"prompt template {name!r} not found at {path}")
    return parse_template(name, path.read_text(encoding="utf-8"))


def template_variables(name: str) -> set[str]:
    """The variables a template declares."""
    return set(load_template(name).variables)


def _lang(lang: str | None, text: str) -> str:
    lang = lang or language(text)
    if lang not in ("zh", "en"):
        raise ValueError(f"lang must be 'zh' or 'en', got {lang!r}")
    return lang


# --- context packing ------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One numbered source in the prompt: adjacent chunks of one document merged."""

    n: int
    chunks: tuple[Chunk, ...]  # in document order
    title: str
    heading: str
    text: str
    rank: int  # best (lowest) 1-based rank among its hits
    pieces: tuple[tuple[int, int], ...] = ()  # evidence packing: document offsets of the sentences in `text`
    context: Chunk | None = None  # evidence packing: the exact document span of the chunks they came from

    @property
    def doc_id(self) -> str:
        """The document the source comes from."""
        return self.chunks[0].doc_id

    @property
    def span(self) -> Chunk:
        """The whole source as one chunk-shaped span (document, heading, offsets, text)."""
        if self.context is not None:
            return self.context
        if len(self.chunks) == 1:
            return self.chunks[0]
        first = self.chunks[0]
        return Chunk(
            id="+".join(c.id for c in self.chunks), doc_id=first.doc_id, text=self.text,
            source=first.source, heading_path=first.heading_path,
            start=min(c.start for c in self.chunks), end=max(c.end for c in self.chunks),
        )


def document_title(chunk: Chunk) -> str:
    """The file name a source is shown under."""
    return Path(chunk.source or chunk.doc_id).name or chunk.doc_id


def merge_text(chunks: Sequence[Chunk]) -> str:
    """Concatenate chunks sorted by offset, dropping the overlapping text they share."""
    text, end = "", None
    for chunk in chunks:
        if end is None or chunk.start >= end:
            text += ("\n" if end is not None and chunk.start > end else "") + chunk.text
        elif chunk.end > end:
            if len(chunk.text) == chunk.end - chunk.start:
                text += chunk.text[end - chunk.start:]  # offsets are exact: cut by offset
            else:
                text += chunk.text[_overlap(text, chunk.text):]
        end = chunk.end if end is None else max(end, chunk.end)
    return text


def _overlap(left: str, right: str) -> int:
    """Length of the longest suffix of `left` that is a prefix of `right`."""
    for size in range(min(len(left), len(right)), 0, -1):
        if left.endswith(right[:size]):
            return size
    return 0


def _touches(a: Chunk, group: list[Chunk]) -> bool:
    return any(
        a.doc_id == b.doc_id and a.start <= b.end + ADJACENT_GAP and b.start <= a.end + ADJACENT_GAP
        for b in group
    )


def group_hits(hits: Sequence[Hit]) -> list[tuple[int, list[Chunk]]]:
    """(best rank, chunks) groups in rank order; a chunk joins every group it touches."""
    groups: list[tuple[int, list[Chunk]]] = []
    seen: set[str] = set()
    for rank, hit in enumerate(hits, start=1):
        chunk = hit.chunk
        if chunk.id in seen:
            continue
        seen.add(chunk.id)
        touching = [i for i, (_, group) in enumerate(groups) if _touches(chunk, group)]
        if not touching:
            groups.append((rank, [chunk]))
            continue
        # Merge every group this chunk bridges into the best-ranked one.
        first = touching[0]
        merged = groups[first][1] + [chunk] + [c for i in touching[1:] for c in groups[i][1]]
        groups[first] = (groups[first][0], merged)
        groups = [g for i, g in enumerate(groups) if i not in touching[1:]]
    return groups


def format_source(source: Source, lang: str = "zh") -> str:
    """One source as delimited data; tags inside the document text are defused."""
    label = "标题" if lang == "zh" else "title"
    heading = f" > {source.heading}" if source.heading else ""
    body = _SOURCE_TAG.sub(lambda m: m.group(0).replace("<", "‹"), source.text.strip())
    return f'<source id="{source.n}">\n[{source.n}] {label}: {source.title}{heading}\n{body}\n</source>'


def format_sources(sources: Sequence[Source], lang: str = "zh") -> str:
    """All sources, in order, as the `sources` template variable."""
    return "\n\n".join(format_source(s, lang) for s in sources)


def pack_context(hits: Sequence[Hit], *, budget_tokens: int, count_tokens: Callable[[str], int],
                 lang: str = "zh") -> list[Source]:
    """Merge adjacent chunks into sources (rank order), drop the lowest-ranked over the budget.

    Each source is counted once, as formatted for the prompt; the top source is always kept
    (cut to fit when it alone is over the budget). Numbering is [1]..[n] in the final order.
    """
    if budget_tokens <= 0:
        raise ValueError(f"budget_tokens must be > 0, got {budget_tokens}")
    sources = []
    for rank, chunks in group_hits(hits):
        chunks = sorted(chunks, key=lambda c: (c.start, c.end))
        first = chunks[0]
        sources.append(Source(0, tuple(chunks), document_title(first), first.heading, merge_text(chunks), rank))
    kept, used = [], 0
    for source in sources:
        cost = count_tokens(format_source(source, lang))
        if used + cost <= budget_tokens:
            kept.append(source)
            used += cost
        elif not kept:  # the best source alone is too long: keep its head
            keep_chars = max(1, int(len(source.text) * budget_tokens / cost * 0.9))
            logger.warning("top source (%d tokens) is over the %d-token budget; cut to %d chars",
                           cost, budget_tokens, keep_chars)
            kept.append(Source(0, source.chunks, source.title, source.heading,
                               source.text[:keep_chars], source.rank))
            used = budget_tokens
        else:
            logger.debug("dropped source rank %d (%d tokens) over the budget", source.rank, cost)
    return [Source(n, s.chunks, s.title, s.heading, s.text, s.rank) for n, s in enumerate(kept, start=1)]


# --- messages -------------------------------------------------------------------------------


def bounded_history(history: Sequence[dict], turns: int) -> list[dict]:
    """The last `turns` user/assistant turns, citation markers stripped, each message cut short."""
    messages = [m for m in history if m.get("role") in ("user", "assistant") and m.get("content")]
    messages = messages[-2 * turns:] if turns > 0 else []
    while messages and messages[0]["role"] != "user":  # start on a user turn
        messages = messages[1:]
    out = []
    for m in messages:
        content = CITATION_MARK.sub("", m["content"]).strip()  # old [n] point at old sources
        if len(content) > HISTORY_CHARS:
            content = content[:HISTORY_CHARS] + "…"
        out.append({"role": m["role"], "content": content})
    return out


def build_messages(question: str, sources: Sequence[Source], history: Sequence[dict] = (), *,
                   lang: str | None = None, history_turns: int = 4, cross: bool = False) -> list[dict]:
    """System rules + the last `history_turns` turns + the user message with sources and question.

    `cross`: the sources are in the other language; the rules are then written in theirs (`qa-cross`), the
    answer asked for in the question's (the retry of a refusal: `rag.generate.draft_answer`).
    """
    lang = _lang(lang, question)
    family, shown = ("qa-cross", "en" if lang == "zh" else "zh") if cross else ("qa", lang)
    system, user = load_template(f"{family}.{lang}").messages(
        sources=format_sources(sources, shown), question=question.strip()
    )
    return [system, *bounded_history(history, history_turns), user]


def condense_messages(question: str, history: Sequence[dict], lang: str | None = None, *,
                      history_turns: int = 4) -> list[dict]:
    """Messages asking the model to rewrite a follow-up into a standalone question."""
    lang = _lang(lang, question)
    names = {"user": "用户", "assistant": "助手"} if lang == "zh" else {"user": "User", "assistant": "Assistant"}
    sep = "：" if lang == "zh" else ": "
    lines = [f"{names[m['role']]}{sep}{m['content']}" for m in bounded_history(history, history_turns)]
    return load_template(f"condense.{lang}").messages(history="\n".join(lines), question=question.strip())


def translate_messages(question: str, target: str) -> list[dict]:
    """Messages asking the model to translate a question into `target` ('zh' or 'en')."""
    return load_template(f"translate.{_lang(target, question)}").messages(question=question.strip())


def refusal_text(lang: str, closest: Sequence[str]) -> str:
    """The plain refusal shown to the user, listing the closest sources (e.g. 'title > heading')."""
    none = "（无）" if lang == "zh" else "(none)"
    listed = "\n".join(f"- {c}" for c in closest) or none
    return load_template(f"refusal.{_lang(lang, '')}").text(closest=listed)
