"""The answer chain, top to bottom: condense -> retrieve -> rerank -> pack -> prompt -> generate -> cite."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from rag.cite import attribute_citations, detect_refusal, parse_citations, support_check
from rag.llm import LLMClient, LLMError
from rag.prompt import (
    build_messages,
    condense_messages,
    load_template,
    pack_context,
    refusal_text,
    translate_messages,
)
from rag.records import Answer, Citation, Hit
from rag.rerank import Reranker, rerank
from rag.retrieve import Retriever, with_history
from rag.settings import Settings
from rag.text import language

logger = logging.getLogger(__name__)

CONDENSE_MAX_TOKENS = 96
TRANSLATE_MAX_TOKENS = 128


def condense(question: str, history: Sequence[dict], llm: LLMClient, *, settings: Settings) -> str:
    """Rewrite a follow-up into a standalone question (the question itself when there is no history)."""
    if not history:
        return question
    if not settings.condense_followups:
        return with_history(question, history)
    messages = condense_messages(question, history, language(question), history_turns=settings.history_turns)
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
    if not settings.translate_queries or language(query) == corpus_language:
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


ANSWER_OPTIONS = {"zh": ("是", "否"), "en": ("yes", "no")}


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


def retrieve(question: str, retriever: Retriever, reranker: Reranker | None, *, settings: Settings, timings: dict) -> list[Hit]:
    """The top_k hits for the prompt, reranked when a reranker is configured."""
    depth = max(settings.top_k, settings.rerank_candidates) if reranker else settings.top_k
    t = time.perf_counter()
    hits = retriever.search(question, k=depth)
    timings["retrieve"] = (time.perf_counter() - t) * 1000
    if reranker and hits:
        t = time.perf_counter()
        hits = rerank(reranker, question, hits)
        timings["rerank"] = (time.perf_counter() - t) * 1000
    return hits[: settings.top_k]


def _closest(hits: Sequence[Hit], n: int = 3) -> list[str]:
    return [f"{h.chunk.doc_id}" + (f" > {h.chunk.heading}" if h.chunk.heading else "") for h in hits[:n]]


def answer(
    question: str,
    history: Sequence[dict] = (),
    *,
    settings: Settings,
    retriever: Retriever,
    llm: LLMClient,
    reranker: Reranker | None = None,
    on_token: Callable[[str], None] | None = None,
    embed: Callable[[list[str]], object] | None = None,
) -> Answer:
    """Answer `question` from the knowledge base, with citations, or refuse plainly."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    lang = language(question)
    t = time.perf_counter()
    standalone = condense(question, history, llm, settings=settings)
    timings["condense"] = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    query = cross_lingual_query(standalone, retriever.corpus_language, llm, settings=settings)
    timings["translate"] = (time.perf_counter() - t) * 1000
    hits = retrieve(query, retriever, reranker, settings=settings, timings=timings)
    if not hits:
        text = refusal_text(lang, [])
        return Answer(question, text, [], [], refused=True, standalone_question=standalone, search_query=query, timings_ms=_total(timings, t0))

    sources = pack_context(hits, budget_tokens=settings.context_tokens, count_tokens=llm.count_tokens, lang=lang)
    asked = standalone if settings.condense_followups else question  # history goes in the prompt too
    messages = build_messages(asked, sources, history, lang=lang, history_turns=settings.history_turns)
    if settings.check_answerability:
        t = time.perf_counter()
        p_yes = answerable_probability(messages, llm, lang)
        timings["check"] = (time.perf_counter() - t) * 1000
        if p_yes is not None and p_yes < settings.answerable_min_p:
            logger.info("refusing: P(sources hold the answer) = %.2f", p_yes)
            return Answer(question, refusal_text(lang, _closest(hits)), [], hits, refused=True,
                          standalone_question=standalone, search_query=query, timings_ms=_total(timings, t0))
    t = time.perf_counter()
    stream = llm.stream(messages, temperature=settings.temperature, max_tokens=settings.max_tokens)
    for piece in stream:
        if "first_token" not in timings:
            timings["first_token"] = (time.perf_counter() - t0) * 1000
        if on_token:
            on_token(piece)
    timings["generate"] = (time.perf_counter() - t) * 1000
    raw = stream.text
    usage = {"prompt_tokens": stream.prompt_tokens, "completion_tokens": stream.completion_tokens}

    if detect_refusal(raw, lang):
        text = refusal_text(lang, _closest(hits))
        return Answer(question, text, [], hits, refused=True, standalone_question=standalone, search_query=query,
                      timings_ms=_total(timings, t0), usage=usage)
    citations, removed, text = parse_citations(raw, sources)
    text, attributed = attribute_citations(text, sources)
    if attributed:
        citations, _, text = parse_citations(text, sources)
    support = support_check(text, sources, embed=embed)
    unsupported = [s.text for s in support if s.status == "unsupported"]
    by_n = {}
    for s in support:
        for n in s.cited:
            by_n[n] = by_n.get(n, True) and s.status == "supported"
    citations = [Citation(c.n, c.chunk, supported=by_n.get(c.n, False)) for c in citations]
    return Answer(question, text, citations, hits, refused=False, standalone_question=standalone, search_query=query,
                  unsupported_sentences=unsupported, removed_citations=removed, attributed_citations=attributed,
                  timings_ms=_total(timings, t0), usage=usage)


def _total(timings: dict, t0: float) -> dict:
    timings["total"] = (time.perf_counter() - t0) * 1000
    return {k: round(v, 1) for k, v in timings.items()}
