"""Request bodies of the API (pydantic): OpenAI's chat request plus the knowledge base's knobs, retrieval, KB creation."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: only text parts carry words
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatRequest(BaseModel):
    """OpenAI's request (unknown OpenAI fields are accepted and ignored) plus the knowledge base's knobs."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, gt=0, le=4096)
    max_completion_tokens: int | None = Field(None, gt=0, le=4096)
    # extensions (`extra_body` in the openai client)
    top_k: int | None = Field(None, gt=0, le=50)
    retrieval_mode: Literal["dense", "bm25", "hybrid"] | None = None
    answer_mode: Literal["generative", "extractive"] | None = None


class RetrieveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kb: str
    query: str = Field(min_length=1, max_length=4000)
    k: int = Field(10, gt=0, le=100)
    mode: Literal["dense", "bm25", "hybrid"] | None = None
    rerank: bool = False


class CreateKB(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
