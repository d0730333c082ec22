"""Whether a generated answer is a refusal: the sentinel the prompts ask for, or a short paraphrase of it."""

from __future__ import annotations

from rag.cite import strip_markers
from rag.text import CITATION_MARK, language, normalize

REFUSAL_SENTINELS = {"zh": "无法回答", "en": "NOT_IN_DOCUMENTS"}
# Phrases about the documents themselves: a refusal whenever the text is short.
_REFUSAL_PHRASES = (
    "无法回答", "没有答案", "文档中没有", "资料中没有", "资料里没有", "文档里没有", "无法根据", "not_in_documents",
    "not in the documents", "not in the sources", "cannot answer", "can't answer", "cannot be answered",
    "unable to answer", "documents do not contain", "sources do not contain", "context does not contain",
)
# Generic phrases ("X does not contain Y" can be a real answer): a refusal only without citations.
_WEAK_REFUSAL_PHRASES = (
    "没有找到", "未找到", "没有提到", "未提及", "没有相关信息", "not contain", "no information",
    "not mentioned", "do not mention", "does not mention",
)
# The sentinel misspelt: "不能回答[1]" (dev zh-010) opens with it and says nothing else.
_REFUSAL_OPENINGS = ("不能回答",)
_REFUSAL_MAX_CHARS = {"zh": 80, "en": 240}  # longer texts with such a phrase are real answers


def detect_refusal(text: str, lang: str | None = None) -> bool:
    """True for an empty answer, the sentinel, or a short "not in the documents" paraphrase."""
    body = strip_markers(normalize(text)).strip().strip("。.!！\"'“”「」*` ")
    if not body:
        return True
    lowered = body.lower()
    if any(lowered.startswith(s.lower()) for s in (*REFUSAL_SENTINELS.values(), *_REFUSAL_OPENINGS)):
        return True
    lang = lang or language(body)
    if len(body) > _REFUSAL_MAX_CHARS.get(lang, 240):
        return False
    if any(p in lowered for p in _REFUSAL_PHRASES):
        return True
    return not CITATION_MARK.search(text) and any(p in lowered for p in _WEAK_REFUSAL_PHRASES)
