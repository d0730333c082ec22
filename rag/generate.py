"""Generating the answer draft: streamed to the reader, a refusal sentinel held back, a cross-lingual refusal retried.

A small model asked in English about Chinese sources refuses answers its sources hold (on the development
set 2-4 of 25 answerable English questions, while its own yes/no check said the sources hold the answer);
asked again with the rules written in the sources' language (`prompts/qa-cross.*`), it answers them. Only
a refusal is retried, so answers cost nothing more; what the retry says passes the same support check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rag.llm import LLMClient
from rag.refusal import REFUSAL_SENTINELS

logger = logging.getLogger(__name__)

_SENTINELS = tuple(s.lower() for s in REFUSAL_SENTINELS.values())


@dataclass(frozen=True)
class Draft:
    """What the model wrote (the last attempt) and the tokens all attempts used."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    retried: bool = False


def holding_back_sentinels(on_token: Callable[[str], None]) -> Callable[[str], None]:
    """`on_token` that shows nothing while the text so far is, or may become, a refusal sentinel: the reader
    sees the refusal message, never "NOT_IN_DOCUMENTS" flashing by (or an answer after it, when retried)."""
    held: list[str] = []
    released = False

    def feed(piece: str) -> None:
        nonlocal released
        if released:
            on_token(piece)
            return
        held.append(piece)
        text = "".join(held).lstrip().lower()
        if any(s.startswith(text) or text.startswith(s) for s in _SENTINELS):
            return
        released = True
        on_token("".join(held))

    return feed


def stream_draft(llm: LLMClient, messages: Sequence[dict], *, temperature: float, max_tokens: int,
                 on_token: Callable[[str], None]) -> Draft:
    """One streamed generation; pieces go to `on_token` (sentinels held back)."""
    stream = llm.stream(messages, temperature=temperature, max_tokens=max_tokens)
    show = holding_back_sentinels(on_token)
    for piece in stream:
        show(piece)
    return Draft(stream.text, stream.prompt_tokens, stream.completion_tokens)


def draft_answer(llm: LLMClient, messages: Sequence[dict], *, temperature: float, max_tokens: int,
                 on_token: Callable[[str], None], refused: Callable[[str], bool],
                 retry: Callable[[], Sequence[dict]] | None = None, on_retry: Callable[[], None] | None = None) -> Draft:
    """The draft of `messages`; when `refused` says it is a refusal and there is a `retry`, the draft of the
    messages it builds (built only then; `on_retry` is called before it streams)."""
    first = stream_draft(llm, messages, temperature=temperature, max_tokens=max_tokens, on_token=on_token)
    if retry is None or not refused(first.text):
        return first
    logger.info("the model refused; asked once more with the rules in the sources' language")
    if on_retry is not None:
        on_retry()
    again = stream_draft(llm, retry(), temperature=temperature, max_tokens=max_tokens, on_token=on_token)
    return Draft(again.text, first.prompt_tokens + again.prompt_tokens, first.completion_tokens + again.completion_tokens,
                 retried=True)
