"""The model's answer checked against its sources: markers resolved, citations attributed or moved, each
sentence's support judged (rag.cite); unsupported sentences leave the text, and an answer whose key claim is
unsupported, or that nothing ties to a source, is refused."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rag.attribute import attribute_citations
from rag.cite import SentenceSupport, parse_citations, strip_markers, support_check
from rag.prompt import Source
from rag.records import Citation, paged_span
from rag.text import WORD_CHAR, sentence_spans, tokenize

_LEAD_IN = re.compile(r"[:：]\s*$")  # a sentence that ends in a colon introduces what follows
# Words about the documents rather than their content (rag.text.tokenize's stems): "… in sources [1] and [3]".
_ABOUT_THE_SOURCES = frozenset({"accord", "sourc", "document", "note", "passag", "text", "mention",
                                "根据", "资料", "文档", "笔记", "原文", "提到", "里"})
_CLOSED_QUESTION = re.compile(r"是否|会不会|能不能|是不是|有没有|可不可以|要不要|还是|吗|\bor\b|"
                              r"^\s*(?:is|are|does|do|did|can|could|will|would|should|has|have|was|were)\b", re.I)


@dataclass(frozen=True)
class Checked:
    """The model's answer after its citations and support were checked, and why it must be refused, if so."""

    text: str
    citations: list[Citation]
    removed: int  # markers naming no source
    attributed: int  # markers added or moved to the source that supports the sentence
    unsupported: list[str]  # sentences taken out of the text
    refusal: str = ""  # "unsupported": the key claim has no support; "uncited": nothing is tied to a source


def check_answer(text: str, sources: Sequence[Source], embed: Callable | None, question: str = "") -> Checked:
    """Resolve markers, attribute or move citations, check support; unsupported sentences leave the text.

    The answer is refused when its key claim (`key_claim`) or every judged sentence is unsupported, when all
    it supports is lead-ins ("构建SFT指令微调数据需要以下步骤:" and then a question copied from the notes) or
    restatements of the question (`restates_question`),
    or when no sentence of it can be tied to a source: an uncited claim is no answer "from the documents".
    Judged: every sentence but the uncited ones the sources support together.
    """
    embed = _remembered(embed)  # attribution and the support check embed the same sources
    citations, removed, text = parse_citations(text, sources)
    text, attributed = attribute_citations(text, sources, embed=embed, question=question)
    if attributed:
        citations, _, text = parse_citations(text, sources)
    support = support_check(text, sources, embed=embed, question=question)
    judged = [s for s in support if s.status != "uncited"]
    unsupported = [s for s in judged if s.status == "unsupported"]
    for s in unsupported:  # shown apart, never as cited fact
        text = text.replace(s.text, "", 1)
    text = "\n".join(line.rstrip() for line in text.strip().splitlines()).strip()
    citations, _, text = parse_citations(text, sources)
    by_n: dict[int, bool] = {}
    for s in support:
        for n in s.cited:
            by_n[n] = by_n.get(n, True) and s.status == "supported"
    citations = [sourced(c, sources, by_n.get(c.n, True)) for c in citations]
    refusal = ""
    announced_only = all(_LEAD_IN.search(strip_markers(s.text)) or restates_question(s.text, question)
                         for s in judged if s.status == "supported")
    if judged and (key_claim(judged).status == "unsupported" or announced_only) or not text:
        refusal = "unsupported"
    elif not citations:
        refusal = "uncited"
    return Checked(text, citations, removed, attributed, [s.text for s in unsupported], refusal)


def restates_question(sentence: str, question: str) -> bool:
    """Whether `sentence` says nothing the question did not: all its words (rag.text.tokenize) but those about the
    documents are the question's ("T5和UniLM在结构上都是Prefix LM。" to "同样是Prefix LM, T5和UniLM在结构上有什么区别?";
    "Prefix LMs are given as representative Prefix LMs in sources [1] and [3]."). Not for a yes/no or
    either-or question, whose answer repeats its words by nature."""
    if not question or _CLOSED_QUESTION.search(question):
        return False
    words = set(tokenize(strip_markers(sentence))) - _ABOUT_THE_SOURCES  # content words: no stopwords, punctuation
    return bool(words) and words <= set(tokenize(question))


def key_claim(judged: Sequence[SentenceSupport]) -> SentenceSupport:
    """The first judged sentence that states something: "QLoRA 做了以下改进：" only leads into the list after it."""
    return next((s for s in judged if not _LEAD_IN.search(strip_markers(s.text))), judged[0])


def _remembered(embed: Callable | None) -> Callable | None:
    """`embed` that computes each distinct text once (for one answer's checks)."""
    if embed is None:
        return None
    seen: dict[str, object] = {}

    def remembered(texts: list[str]) -> list:
        new = [t for t in dict.fromkeys(texts) if t not in seen]
        if new:
            seen.update(zip(new, embed(new), strict=True))
        return [seen[t] for t in texts]

    return remembered


def sourced(citation: Citation, sources: Sequence[Source], supported: bool = True) -> Citation:
    """`citation` with its source's evidence pieces and the pages of the chunks that source was cut from."""
    source = next((s for s in sources if s.n == citation.n), None)
    if source is None:
        return Citation(citation.n, citation.chunk, supported=supported)
    return Citation(citation.n, paged_span(citation.chunk, source.chunks, source.pieces), supported=supported,
                    pieces=source.pieces)


_OPEN_MARKER = re.compile(r"[\[【［][\d\s,，、;；\-–]*$")  # a citation marker the model is still writing: "[1"


class CheckedStream:
    """The model's answer passed on to the reader as far as the check lets it: once a sentence is complete (more
    text follows it), the draft's complete sentences are checked (`check_answer`) and what the checked text adds
    to what the reader has is passed on. A sentence the check removes is never shown, not even for a moment, and
    nothing is shown while the draft so far would be refused (its key claim unsupported, only a lead-in, nothing
    cited): more sentences may still make it an answer. What the checked text rewrites (a marker moved) holds the
    stream until the final answer replaces it. One per answer; `new_draft` before a second draft (a retry)."""

    def __init__(self, on_text: Callable[[str], None], sources: Sequence[Source], embed: Callable | None,
                 question: str) -> None:
        self.on_text, self.sources, self.question = on_text, sources, question
        self.embed = _remembered(embed)  # each sentence is embedded once for the whole stream
        self.draft = ""  # the model's text so far
        self.checked_upto = 0  # end of the draft's complete sentences last checked
        self.shown = ""  # what the reader has

    def __call__(self, piece: str) -> None:
        self.draft += piece
        # sentences with words of their own: a marker run after a stop ("…。 [1]", or "[1" still open) belongs to
        # the sentence before
        starts = [a for a, b in sentence_spans(self.draft)
                  if WORD_CHAR.search(_OPEN_MARKER.sub("", strip_markers(self.draft[a:b])))]
        upto = starts[-1] if len(starts) > 1 else 0  # everything before the last sentence, which may still grow
        if upto <= self.checked_upto:
            return
        self.checked_upto = upto
        checked = check_answer(self.draft[:upto], self.sources, self.embed, self.question)
        if checked.refusal or not checked.text.startswith(self.shown):
            return
        added, self.shown = checked.text[len(self.shown):], checked.text
        if added:
            self.on_text(added)

    def finish(self, checked: str) -> None:
        """The final checked answer: what it adds to what the reader has (its last sentence) is passed on."""
        if checked.startswith(self.shown) and len(checked) > len(self.shown):
            self.on_text(checked[len(self.shown):])
            self.shown = checked

    def new_draft(self) -> None:
        """A second draft follows (the first was a refusal): check it from its start."""
        self.draft, self.checked_upto = "", 0
