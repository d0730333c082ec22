"""Generating the draft: sentinels held back from the reader, a cross-lingual refusal asked once more."""

from __future__ import annotations

import pytest

from rag.chain import answer
from rag.generate import holding_back_sentinels
from rag.llm import ChatStream


@pytest.mark.parametrize(
    ("pieces", "shown"),
    [
        pytest.param(["NOT", "_IN", "_DOC", "UMENTS", "."], "", id="english-sentinel"),
        pytest.param(["无法", "回答", "。"], "", id="chinese-sentinel"),
        pytest.param(["No", "rmalization", " [1]"], "Normalization [1]", id="diverges-after-a-shared-start"),
        pytest.param(["P0 事件", "15 分钟内响应。[1]"], "P0 事件15 分钟内响应。[1]", id="answer"),
    ],
)
def test_a_refusal_sentinel_never_reaches_the_reader(pieces, shown):
    seen: list[str] = []
    feed = holding_back_sentinels(seen.append)
    for piece in pieces:
        feed(piece)
    assert "".join(seen) == shown


class ScriptedModel:
    """A model that refuses under the question-language rules and answers under the sources-language ones,
    as the 1.5B did for English questions over the Chinese notes (the chain's control flow is under test)."""

    def __init__(self, answer: str) -> None:
        self.answer, self.systems = answer, []

    def stream(self, messages, **kwargs) -> ChatStream:
        system = messages[0]["content"]
        self.systems.append(system)
        reply = self.answer if "资料是中文的" in system else "NOT_IN_DOCUMENTS"
        stream = ChatStream(iter(()))

        def pieces():
            for i in range(0, len(reply), 4):
                stream.text += reply[i:i + 4]
                yield reply[i:i + 4]
            stream.prompt_tokens, stream.completion_tokens = 300, len(reply) // 4

        stream._pieces = pieces()
        return stream


def test_a_refusal_over_sources_in_the_other_language_is_asked_again(sample_settings, sample_retriever):
    settings = sample_settings.model_copy(update={"answerability_check": "off", "query_translation": "off"})
    model = ScriptedModel("A P0 incident must be responded to within 15 minutes. [1]")
    seen: list[str] = []
    ans = answer("What is the response time for a P0 incident?", settings=settings, retriever=sample_retriever,
                 llm=model, on_token=seen.append)
    assert len(model.systems) == 2 and "NOT_IN_DOCUMENTS" not in "".join(seen)
    assert not ans.refused and "15 minutes" in ans.text and ans.citations
    assert ans.usage["prompt_tokens"] == 600  # both attempts counted
    off = answer("What is the response time for a P0 incident?", settings=settings.model_copy(
        update={"cross_lingual_retry": False}), retriever=sample_retriever, llm=ScriptedModel("unused"))
    assert off.refused and off.refusal_reason == "model"


def test_a_refusal_in_the_sources_language_is_final(sample_settings, sample_retriever):
    settings = sample_settings.model_copy(update={"answerability_check": "off"})
    model = ScriptedModel("unused")
    ans = answer("P0 事件需要多快响应？", settings=settings, retriever=sample_retriever, llm=model)
    assert len(model.systems) == 1 and ans.refused and ans.refusal_reason == "model"
