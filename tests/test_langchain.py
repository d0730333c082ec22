"""The LangChain integration inside real LCEL pipelines: our retriever feeding ChatOpenAI on the embedded
llama.cpp server, and the answer chain composed as a Runnable."""

from __future__ import annotations

import pytest

pytest.importorskip("langchain_core", reason="install the [langchain] extra")

from langchain_core.output_parsers import StrOutputParser  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from langchain_core.runnables import RunnableLambda, RunnablePassthrough  # noqa: E402

from rag.integrations.langchain import KnowledgeBaseRetriever, answer_runnable  # noqa: E402

QUESTION = "BM25 中的参数 b = 0.75 控制的是什么？"


@pytest.fixture(scope="module")
def kb_retriever(sample_retriever):
    return KnowledgeBaseRetriever(retriever=sample_retriever, k=3)


def test_retriever_returns_documents_with_provenance(kb_retriever):
    docs = kb_retriever.invoke("默认端口")
    assert len(docs) == 3 and "8501" in docs[0].page_content
    meta = docs[0].metadata
    assert set(meta) == {"doc_id", "source", "heading", "start", "end", "scores"}
    assert meta["doc_id"] == "sample/部署手册.md" and meta["end"] > meta["start"]
    assert meta["scores"]["fused"] is not None and {"dense_rank", "bm25_rank", "rerank"} <= set(meta["scores"])
    bm25_only = KnowledgeBaseRetriever(retriever=kb_retriever.retriever, k=2, mode="bm25").invoke("默认端口")
    assert all(d.metadata["scores"]["dense_rank"] is None for d in bm25_only)


@pytest.mark.llm
def test_retriever_in_a_prompt_llm_pipeline(kb_retriever, llm, sample_settings):
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(base_url=llm.base_url, api_key="not-needed", model=sample_settings.llm_model,
                      temperature=0, max_tokens=64, max_retries=0)
    prompt = ChatPromptTemplate.from_messages([
        ("system", "只根据资料回答，一句话。\n资料：\n{context}"),
        ("human", "{question}"),
    ])
    pipeline = ({"context": kb_retriever | RunnableLambda(lambda docs: "\n\n".join(d.page_content for d in docs)),
                 "question": RunnablePassthrough()} | prompt | chat | StrOutputParser())
    text = pipeline.invoke(QUESTION)
    assert "长度" in text


@pytest.mark.llm
def test_answer_chain_composes_as_a_runnable(sample_settings, sample_retriever, llm):
    chain = answer_runnable(sample_settings, retriever=sample_retriever, llm=llm)
    pipeline = RunnableLambda(lambda x: x["q"]) | chain
    out = pipeline.invoke({"q": QUESTION})
    assert out["refused"] is False and "长度" in out["answer"]
    assert out["references"] and any("b = 0.75" in r["text"] for r in out["references"])
    [refused] = chain.batch(["What is the capital of Mars?"])
    assert refused["refused"] is True and refused["references"] == []
