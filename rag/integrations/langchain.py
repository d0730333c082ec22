"""LangChain over a knowledge base (`pip install -e ".[langchain]"`).

- `KnowledgeBaseRetriever`: a `BaseRetriever`; each hit becomes a `Document` whose metadata holds the
  document id, file name, heading, offsets and every retrieval stage's rank and score.
- `answer_runnable()`: the whole answer chain (retrieval, evidence, generation, citation check) as a
  `Runnable` that takes a question (or {"question", "history"}) and returns the answer with its references.

Both are thin: the retrieval and the chain are rag's own, so answers match the app and the HTTP API.
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableLambda
from pydantic import ConfigDict

from rag.api.shapes import reference
from rag.records import Hit
from rag.retrieve import Retriever, open_retriever
from rag.settings import Settings


def hit_document(hit: Hit) -> Document:
    """A retrieval hit as a LangChain `Document`."""
    chunk = hit.chunk
    scores = {"dense_rank": hit.dense_rank, "dense_score": hit.dense_score, "bm25_rank": hit.bm25_rank,
              "bm25_score": hit.bm25_score, "fused": hit.fused, "rerank": hit.rerank}
    return Document(page_content=chunk.text, id=chunk.id,
                    metadata={"doc_id": chunk.doc_id, "source": chunk.source, "heading": chunk.heading,
                              "start": chunk.start, "end": chunk.end, "scores": scores})


class KnowledgeBaseRetriever(BaseRetriever):
    """Hybrid (or dense / BM25) search over one knowledge base, as a LangChain retriever."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    retriever: Retriever
    k: int = 5
    mode: str | None = None  # dense | bm25 | hybrid; None: the knowledge base's settings

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> KnowledgeBaseRetriever:
        """Open `settings.kb` (its embedder is loaded once and shared)."""
        return cls(retriever=open_retriever(settings), **kwargs)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [hit_document(h) for h in self.retriever.search(query, mode=self.mode, k=self.k)]


def answer_runnable(settings: Settings, *, retriever: Retriever | None = None, llm=None) -> Runnable:
    """The answer chain as a Runnable: question -> {"answer", "references", "refused", "refusal_reason"}.

    The input is a question string or {"question": str, "history": [{"role", "content"}, ...]}.
    `llm` defaults to the configured LLM (the embedded llama.cpp server unless `llm_base_url` is set).
    """
    from rag.chain import answer
    from rag.llm import client_from_settings
    from rag.rerank import load_reranker

    kb = retriever or open_retriever(settings)
    client = llm or client_from_settings(settings)

    def run(request: str | dict) -> dict:
        question, history = (request, []) if isinstance(request, str) else (request["question"], request.get("history", []))
        ans = answer(question, history, settings=settings, retriever=kb, llm=client, reranker=load_reranker(settings))
        return {"answer": ans.text, "references": [reference(c) for c in ans.citations], "refused": ans.refused,
                "refusal_reason": ans.refusal_reason}

    return RunnableLambda(run, name=f"rag_answer[{settings.kb}]")
