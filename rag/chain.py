"""The answer chain, top to bottom.

question -> condense follow-up -> translate (cross-lingual) -> retrieve -> rerank -> select evidence
(reported at once) -> refuse on weak evidence, when the question asks for a year or a quantity the
evidence does not state, or when the notes list the question without answering it -> answerability
check -> generate (streamed; a refusal over sources in the other language asked once more, rag.generate) ->
parse [n] -> attribute -> support check (invented facts refuse or are removed) -> Answer.

With `answer_mode = "extractive"`, or when the LLM cannot be reached, the best evidence sentences
are the answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from rag.answer_type import missing_answer_type
from rag.check import CheckedStream, check_answer, sourced
from rag.cite import parse_citations
from rag.embed import support_embedder
from rag.evidence import Evidence, followers, select_evidence
from rag.generate import draft_answer
from rag.llm import LLMClient, LLMError, LLMUnavailable, estimate_tokens
from rag.prompt import (
    Source,
    build_messages,
    condense_messages,
    load_template,
    pack_context,
    refusal_text,
    translate_messages,
)
from rag.records import Answer, Hit
from rag.refusal import detect_refusal
from rag.rerank import Reranker, rerank
from rag.retrieve import Retriever, with_history
from rag.settings import Settings
from rag.text import language, question_language

logger = logging.getLogger(__name__)

CONDENSE_MAX_TOKENS = 96
TRANSLATE_MAX_TOKENS = 128
ANSWER_OPTIONS = {"zh": ("是", "否"), "en": ("yes", "no")}


class Stopwatch:
    """Per-stage milliseconds of one question: `with clock.stage("x")` adds, `mark("x")` stamps time since start."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - t) * 1000

    def mark(self, name: str) -> None:
        self.ms.setdefault(name, (time.perf_counter() - self.t0) * 1000)

    def totals(self) -> dict[str, float]:
        self.ms["total"] = (time.perf_counter() - self.t0) * 1000
        return {k: round(v, 1) for k, v in self.ms.items()}


# --- query --------------------------------------------------------------------------------------


def condense(question: str, history: Sequence[dict], llm: LLMClient, *, settings: Settings) -> str:
    """Rewrite a follow-up into a standalone question (the question itself when there is no history)."""
    if not history:
        return question
    if not settings.condense_followups:
        return with_history(question, history)
    messages = condense_messages(question, history, question_language(question), history_turns=settings.history_turns)
    rewritten = llm.chat(messages, temperature=0.0, max_tokens=CONDENSE_MAX_TOKENS).text.strip()
    rewritten = rewritten.splitlines()[0].strip() if rewritten else ""
    # A rewrite that lost the question (empty, or a long answer instead of a question) is ignored.
    if not rewritten or len(rewritten) > 4 * len(question) + 80:
        return question
    return rewritten


def cross_lingual_query(query: str, corpus_language: str, llm: LLMClient, *, settings: Settings) -> str:
    """`query` plus its translation into the knowledge base's language when the two languages differ.

    The original stays in the query (English terms still match BM25 and the multilingual embedder);
    a translation that is empty or much longer than the question (an answer, not a translation) is dropped,
    and an unreachable LLM leaves the query as it is.
    """
    if not settings.translate_queries or question_language(query) == corpus_language:
        return query
    try:
        translated = llm.chat(translate_messages(query, corpus_language), temperature=0.0,
                              max_tokens=TRANSLATE_MAX_TOKENS).text.strip()
    except LLMError as e:  # a missing translation only weakens retrieval; the answer step reports the LLM
        logger.warning("question not translated for retrieval: %s", e)
        return query
    translated = " ".join(translated.split())
    if not translated or len(translated) > 2 * len(query) + 40:
        logger.info("translation of %r dropped: %r", query, translated[:200])
        return query
    return f"{query} {translated}"


def retrieve(question: str, retriever: Retriever, reranker: Reranker | None, *, settings: Settings,
             clock: Stopwatch) -> list[Hit]:
    """The top_k hits for the prompt, reranked when a reranker is configured."""
    depth = max(settings.top_k, settings.rerank_candidates) if reranker else settings.top_k
    with clock.stage("retrieve"):
        hits = retriever.search(question, k=depth)
    if reranker and hits:
        with clock.stage("rerank"):
            hits = rerank(reranker, question, hits)
    return hits[: settings.top_k]


# --- evidence -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    """What retrieval found for one question, before any generation."""

    standalone: str  # the question as searched (a follow-up with its context)
    query: str  # plus its translation, when there is one
    hits: list[Hit]
    sources: list[Source]
    evidence: Evidence | None  # None with whole-chunk packing


def find(question: str, history: Sequence[dict], *, settings: Settings, retriever: Retriever, llm: LLMClient,
         reranker: Reranker | None, clock: Stopwatch) -> Found:
    """Condense, translate, retrieve, rerank, and pack the sources the answer will be built from."""
    with clock.stage("condense"):
        standalone = condense(question, history, llm, settings=settings)
    with clock.stage("translate"):
        query = cross_lingual_query(standalone, retriever.corpus_language, llm, settings=settings)
    hits = retrieve(query, retriever, reranker, settings=settings, clock=clock)
    evidence = None
    with clock.stage("select"):
        if not hits:
            sources = []
        elif settings.context_packing == "evidence" or settings.answer_mode == "extractive":
            evidence = select_evidence(query, hits, documents=retriever.state.documents, embedder=retriever.embedder,
                                       budget_tokens=settings.evidence_tokens)
            sources = evidence.sources
        else:
            sources = pack_context(hits, budget_tokens=settings.context_tokens, count_tokens=llm.count_tokens,
                                   lang=question_language(question))
    return Found(standalone, query, hits, sources, evidence)


def extractive_text(evidence: Evidence, sources: Sequence[Source], n_sentences: int) -> str:
    """The best evidence sentences, best first, each with the sentences it brought along (a lead-in's first
    item: rag.evidence.followers) and followed by the marker of its source."""
    number = {(piece, s.doc_id): s.n for s in sources for piece in s.pieces}
    lines = []
    for sentence in evidence.picked[:n_sentences]:
        n = number.get(((sentence.start, sentence.end), sentence.doc_id))
        if n is not None:
            brought = [f.text.strip() for f in followers(sentence) if ((f.start, f.end), f.doc_id) in number]
            lines.append(f"{' '.join([sentence.text.strip(), *brought])} [{n}]")
    return "\n\n".join(lines)


# --- generation ---------------------------------------------------------------------------------


def answerable_probability(messages: list[dict], llm: LLMClient, lang: str) -> float | None:
    """P(yes) that the sources hold the answer, read from the model's first-token probabilities.

    The check reuses the answer prompt as its prefix (so the server's prompt cache makes the
    later answer cheap) and appends prompts/check.<lang>.md. None when the server gives no
    probabilities (the check is then skipped, never guessed).
    """
    check = [*messages[:-1], {"role": "user", "content": messages[-1]["content"] + "\n\n" + load_template(f"check.{lang}").text()}]
    yes, no = ANSWER_OPTIONS[lang]
    probs = llm.option_probabilities(check, [yes, no])
    total = probs[yes] + probs[no]
    return probs[yes] / total if total > 0.05 else None


def _closest(hits: Sequence[Hit], n: int = 3) -> list[str]:
    return [f"{h.chunk.doc_id}" + (f" > {h.chunk.heading}" if h.chunk.heading else "") for h in hits[:n]]


# --- the chain ----------------------------------------------------------------------------------


def answer(
    question: str,
    history: Sequence[dict] = (),
    *,
    settings: Settings,
    retriever: Retriever,
    llm: LLMClient,
    reranker: Reranker | None = None,
    on_token: Callable[[str], None] | None = None,
    on_evidence: Callable[[list[Source]], None] | None = None,
) -> Answer:
    """Answer `question` from the knowledge base, with citations, or refuse plainly.

    `on_evidence` is called with the selected sources as soon as they exist (before any LLM token);
    `on_token` with each piece of the streamed answer.
    """
    clock = Stopwatch()
    lang = question_language(question)
    found = find(question, history, settings=settings, retriever=retriever, llm=llm, reranker=reranker, clock=clock)
    clock.mark("evidence")
    if on_evidence:
        on_evidence(found.sources)
    score = found.evidence.top_score if found.evidence else None

    def result(text: str = "", citations=(), *, refused: str = "", mode: str = settings.answer_mode,
               sources: list[Source] | None = None, **extra) -> Answer:
        if refused:
            text = refusal_text(lang, _closest(found.hits))
        return Answer(question, text, list(citations), found.hits, refused=bool(refused), refusal_reason=refused,
                      standalone_question=found.standalone, search_query=found.query,
                      evidence=found.sources if sources is None else sources,
                      evidence_score=score, answer_mode=mode, timings_ms=clock.totals(), **extra)

    if not found.sources:
        return result(refused="no_hits")
    if score is not None and score < settings.evidence_min_score:
        logger.info("refusing: best evidence score %.3f < %.3f", score, settings.evidence_min_score)
        return result(refused="weak_evidence")
    lacking = missing_answer_type(question, " ".join(s.text for s in found.sources)) if settings.answer_type_check else ""
    if lacking:
        logger.info("refusing: the question asks for a %s that the evidence does not state", lacking)
        return result(refused="answer_type")
    margin = found.evidence.asked_margin if found.evidence else None
    if margin is not None and margin >= settings.asked_margin:
        logger.info("refusing: the notes list this question (%.3f closer than any statement) but do not answer it", margin)
        return result(refused="asked_not_answered")
    if settings.answer_mode == "extractive":
        return _extractive(found.evidence, result, settings)

    asked = found.standalone if settings.condense_followups else question  # history goes in the prompt too
    messages = build_messages(asked, found.sources, history, lang=lang, history_turns=settings.history_turns)
    p_yes = None
    try:
        if settings.check_answerability:
            with clock.stage("check"):
                p_yes = answerable_probability(messages, llm, lang)
            if p_yes is not None and p_yes < settings.answerable_min_p:
                logger.info("refusing: P(sources hold the answer) = %.2f", p_yes)
                return result(refused="check", answerable_p=p_yes)
        def shown(piece: str) -> None:
            clock.mark("first_token")  # the first piece the reader sees
            if on_token:
                on_token(piece)

        stream = CheckedStream(shown, found.sources, support_embedder(settings).encode_queries, found.standalone)
        cross = settings.cross_lingual_retry and language(" ".join(s.text for s in found.sources)) != lang
        with clock.stage("generate"):
            draft = draft_answer(llm, messages, temperature=settings.temperature, max_tokens=settings.max_tokens,
                                 on_token=stream, on_retry=stream.new_draft, refused=lambda text: detect_refusal(text, lang),
                                 retry=(lambda: build_messages(asked, found.sources, history, lang=lang, cross=True,
                                                               history_turns=settings.history_turns)) if cross else None)
    except LLMUnavailable as e:
        logger.warning("LLM unreachable, answering with the evidence sentences: %s", e)
        evidence = found.evidence or select_evidence(
            found.query, found.hits, documents=retriever.state.documents, embedder=retriever.embedder,
            budget_tokens=settings.evidence_tokens)
        return _extractive(evidence, result, settings, notice=f"llm_unavailable: {e}")
    usage = {"prompt_tokens": draft.prompt_tokens or _estimate(messages), "completion_tokens": draft.completion_tokens,
             "generations": 2 if draft.retried else 1}
    if detect_refusal(draft.text, lang):
        return result(refused="model", answerable_p=p_yes, usage=usage, draft=draft.text)
    checked = check_answer(draft.text, found.sources, stream.embed, found.standalone)  # the stream embedded most
    if checked.refusal:
        logger.info("refusing (%s): the answer's key claim is not tied to a source that supports it", checked.refusal)
        return result(refused=checked.refusal, answerable_p=p_yes, usage=usage, draft=draft.text,
                      unsupported_sentences=checked.unsupported)
    stream.finish(checked.text)  # the last sentence, which no later text completed
    return result(checked.text, checked.citations, answerable_p=p_yes, usage=usage, draft=draft.text,
                  unsupported_sentences=checked.unsupported, removed_citations=checked.removed,
                  attributed_citations=checked.attributed)


def _extractive(evidence: Evidence, result: Callable[..., Answer], settings: Settings, notice: str = "") -> Answer:
    """The answer made of the best evidence sentences, their sources cited (no LLM)."""
    text = extractive_text(evidence, evidence.sources, settings.extractive_sentences)
    citations, _, text = parse_citations(text, evidence.sources)
    citations = [sourced(c, evidence.sources) for c in citations]
    return result(text, citations, mode="extractive", notice=notice, sources=evidence.sources)


def _estimate(messages: Sequence[dict]) -> int:
    return sum(estimate_tokens(m["content"]) for m in messages)
