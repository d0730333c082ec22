"""The small typed records that flow through the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Document:
    """One loaded source document, before cleaning."""

    id: str  # stable document id (relative path, or the corpus' own id)
    source: str  # absolute path of the file it came from
    text: str
    title: str = ""
    meta: dict = field(default_factory=dict, compare=False, hash=False)


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

    @property
    def heading(self) -> str:
        """Heading path joined for display."""
        return " > ".join(self.heading_path)


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

    def quotes(self) -> list[dict]:
        """The evidence pieces as {"start", "end", "text"}, cut from `chunk` (an exact document span)."""
        base = self.chunk.start
        return [{"start": s, "end": e, "text": self.chunk.text[s - base:e - base]} for s, e in self.pieces]


@dataclass
class Answer:
    """The result of one question through the whole chain."""

    question: str
    text: str
    citations: list[Citation]
    hits: list[Hit]
    refused: bool = False
    # why it was refused: no_hits | weak_evidence | check (LLM yes/no) | model (it said so) | unsupported
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
    draft: str = ""  # the model's text when the answer was refused after generating
