"""The small typed records that flow through the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Document:
    """One loaded source document, before cleaning."""

    id: str  # stable document id (relative path, or the corpus' own id)
    source: str  # absolute path of the file it came from
    text: str
    title: str = ""
    meta: dict = field(default_factory=dict, compare=False, hash=False)
    # paged formats (PDF, images): (page number, offset in `text` where that page starts), ascending
    pages: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Chunk:
    """A retrievable span of a cleaned document."""

    id: str  # content hash: same document + same text -> same id
    doc_id: str
    text: str
    source: str
    heading_path: tuple[str, ...] = ()
    start: int = 0  # character offsets into the cleaned document text
    end: int = 0
    page: int | None = None  # paged documents: the 1-based page the chunk starts on
    page_end: int | None = None  # and the page it ends on (== page for a one-page chunk)
    page_breaks: tuple[tuple[int, int], ...] = ()  # (page, document offset) of each later page starting inside

    def __post_init__(self) -> None:  # rows read back from JSON carry lists
        object.__setattr__(self, "page_breaks", tuple(tuple(b) for b in self.page_breaks))

    @property
    def heading(self) -> str:
        """Heading path joined for display."""
        return " > ".join(self.heading_path)

    @property
    def page_label(self) -> str:
        """'p. 7', 'pp. 7-8', or '' for a document without pages."""
        if self.page is None:
            return ""
        return f"pp. {self.page}-{self.page_end}" if self.page_end not in (None, self.page) else f"p. {self.page}"

    def page_at(self, offset: int) -> int | None:
        """The page holding document offset `offset` (inside this chunk)."""
        page = self.page
        for number, start in self.page_breaks:
            if start <= offset:
                page = number
        return page


def paged_span(span: Chunk, chunks, pieces: tuple[tuple[int, int], ...] = ()) -> Chunk:
    """`span`, a document range cut from `chunks`, with their pages: those of the `pieces` (document
    offsets) when given, else the whole span's. Unchanged when no chunk has a page."""
    marks = sorted({(c.start, c.page) for c in chunks if c.page is not None}
                   | {(start, number) for c in chunks for number, start in c.page_breaks})
    if not marks:
        return span
    lo, hi = (min(s for s, _ in pieces), max(e for _, e in pieces)) if pieces else (span.start, span.end)
    first = Chunk("", "", "", "", page=marks[0][1], page_breaks=tuple((p, s) for s, p in marks[1:]))
    breaks = tuple((p, s) for s, p in marks if span.start < s < span.end and p != first.page_at(s - 1))
    return replace(span, page=first.page_at(lo), page_end=first.page_at(max(hi - 1, lo)), page_breaks=breaks)


@dataclass
class Hit:
    """A retrieved chunk with the provenance of every stage that ranked it (ranks are 1-based)."""

    chunk: Chunk
    dense_rank: int | None = None
    dense_score: float | None = None
    bm25_rank: int | None = None
    bm25_score: float | None = None
    fused: float | None = None
    rerank: float | None = None

    @property
    def score(self) -> float:
        """The score of the last stage that ran."""
        for value in (self.rerank, self.fused, self.dense_score, self.bm25_score):
            if value is not None:
                return value
        return 0.0


@dataclass(frozen=True)
class Citation:
    """An `[n]` marker in an answer, resolved to the chunk it points at."""

    n: int
    chunk: Chunk
    supported: bool = True
    support: float = 0.0  # overlap score of the citing sentences with the chunk
    pieces: tuple[tuple[int, int], ...] = ()  # document offsets of the evidence sentences the model read

    @property
    def page(self) -> int | None:
        """The page the cited span starts on (None for a document without pages)."""
        return self.chunk.page

    @property
    def page_end(self) -> int | None:
        """The page the cited span ends on."""
        return self.chunk.page_end

    def quotes(self) -> list[dict]:
        """The evidence pieces as {"start", "end", "text"}, cut from `chunk` (an exact document span)."""
        base, paged = self.chunk.start, self.chunk.page is not None
        return [{"start": s, "end": e, "text": self.chunk.text[s - base:e - base]}
                | ({"page": self.chunk.page_at(s)} if paged else {}) for s, e in self.pieces]


@dataclass
class Answer:
    """The result of one question through the whole chain."""

    question: str
    text: str
    citations: list[Citation]
    hits: list[Hit]
    refused: bool = False
    # why it was refused: no_hits | weak_evidence | answer_type (a year/quantity the evidence lacks) | check (LLM
    # yes/no) | model (it said so) | unsupported
    refusal_reason: str = ""
    standalone_question: str = ""
    search_query: str = ""  # what retrieval searched for (the standalone question, plus its translation)
    unsupported_sentences: list[str] = field(default_factory=list)
    removed_citations: int = 0
    attributed_citations: int = 0  # markers added by the support check where the model gave none
    timings_ms: dict[str, float] = field(default_factory=dict)
    usage: dict[str, int] = field(default_factory=dict)
    evidence: list = field(default_factory=list)  # the numbered sources the answer was built from (rag.prompt.Source)
    evidence_score: float | None = None  # best evidence sentence's score (rag.evidence)
    answerable_p: float | None = None  # the LLM's P(the sources hold the answer), when checked
    answer_mode: str = "generative"  # generative | extractive
    notice: str = ""  # e.g. "llm_unavailable: ..." when the extractive fallback answered
    draft: str = ""  # the model's text as generated, before the citation step (shown when that step refused it)
