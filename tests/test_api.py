"""The HTTP API on a real uvicorn server on loopback: chat through the official `openai` client, retrieval, the queue.

Chat generates with the embedded 0.5B model (greedy); retrieval and admin use the real bundled embedder,
FAISS and BM25 over a knowledge base of data/sample.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest

from rag.api.app import create_app
from rag.api.resources import LLMBusy, LLMGate
from rag.llm_server import free_port
from rag.serve import is_loopback
from rag.serve import main as serve_main
from tests.live_api import KEY, QUESTION, LiveServer, stored

# --- OpenAI-compatible chat ---------------------------------------------------------------------


def test_models_are_the_knowledge_bases(client):
    assert "sample" in [m.id for m in client.models.list().data]


@pytest.mark.llm
def test_chat_answer_carries_references_to_real_chunks(client, api_settings):
    response = client.chat.completions.create(model="sample", messages=[{"role": "user", "content": QUESTION}])
    message = response.choices[0].message
    extra = message.model_extra
    assert response.object == "chat.completion" and response.choices[0].finish_reason == "stop"
    assert extra["refused"] is False and "[1]" in message.content
    refs = extra["references"]
    assert refs and {r["n"] for r in refs} >= {1}
    assert stored(api_settings, "sample", [i for r in refs for i in r["chunk_ids"]])
    assert not stored(api_settings, "sample", ["not-a-chunk"])
    for ref in refs:
        assert ref["doc_id"] == "sample/检索原理.txt"
        assert set(ref) >= {"n", "doc_id", "source", "heading", "start", "end", "text", "supported"}
        assert "/" not in ref["source"]  # a file name, never a server path
    assert any("b = 0.75" in r["text"] for r in refs)
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0


@pytest.mark.llm
def test_streamed_chat_sends_evidence_first_and_references_last(server):
    body = {"model": "sample", "stream": True, "messages": [{"role": "user", "content": QUESTION}]}
    events = []
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=300,
                      headers={"Authorization": f"Bearer {KEY}"}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    kinds = ["evidence" if "evidence" in c else "token" if c["choices"][0]["delta"].get("content") else
             "final" if c["choices"][0]["finish_reason"] else "other" for c in chunks]
    assert kinds.index("evidence") < kinds.index("token") < kinds.index("final") == len(kinds) - 1
    final = chunks[-1]["choices"][0]["delta"]
    assert final["refused"] is False and final["references"]
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert "0.75" in streamed and "[1]" in final["answer"]  # the checked text (citations attributed)


@pytest.mark.llm
def test_openai_client_streams_with_references_in_the_last_chunk(client):
    stream = client.chat.completions.create(model="sample", stream=True,
                                            messages=[{"role": "user", "content": QUESTION}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    last = chunks[-1].choices[0]
    assert text.strip() and last.finish_reason == "stop"
    assert last.delta.model_extra["references"] and last.delta.model_extra["refused"] is False


def test_extractive_answer_without_llm_cites_evidence(client, api_settings):
    response = client.chat.completions.create(
        model="sample", messages=[{"role": "user", "content": "Web 界面默认端口是多少？"}],
        extra_body={"answer_mode": "extractive"})
    message = response.choices[0].message
    assert message.model_extra["answer_mode"] == "extractive" and "8501" in message.content
    refs = message.model_extra["references"]
    assert refs and stored(api_settings, "sample", [i for r in refs for i in r["chunk_ids"]])
    assert all(q["text"] in r["text"] for r in refs for q in r["evidence"])


@pytest.mark.llm
def test_question_outside_the_documents_is_refused(client):
    response = client.chat.completions.create(
        model="sample", messages=[{"role": "user", "content": "What is the capital of Mars?"}])
    message = response.choices[0].message
    assert message.model_extra["refused"] is True and message.model_extra["references"] == []
    assert message.model_extra["refusal_reason"]


def test_unknown_model_is_404_in_openai_shape(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="no-such-kb", messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["code"] == "model_not_found" and "no-such-kb" in err.value.body["message"]


def test_bad_requests_are_400_with_the_field(http):
    r = http.post("/v1/chat/completions", json={"model": "sample", "messages": []})
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]
    r = http.post("/v1/chat/completions", json={"model": "sample",
                                                "messages": [{"role": "assistant", "content": "hi"}]})
    assert r.status_code == 400 and "user message" in r.json()["error"]["message"]
    r = http.post("/v1/chat/completions", json={"model": "sample", "top_k": 0,
                                                "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400 and "top_k" in r.json()["error"]["message"]


def test_llm_down_is_503_with_the_reason(sample_settings):
    down = sample_settings.model_copy(update={"llm_base_url": f"http://127.0.0.1:{free_port()}/v1", "llm_retries": 0})
    with LiveServer(create_app(down)) as live:
        r = httpx.post(f"{live.url}/v1/chat/completions", timeout=60,
                       json={"model": "sample", "messages": [{"role": "user", "content": QUESTION}]})
    assert r.status_code == 503 and r.json()["error"]["code"] == "llm_unavailable"
    assert "extractive" in r.json()["error"]["message"]


# --- retrieval ------------------------------------------------------------------------------


def test_retrieve_returns_hits_with_provenance(http, api_settings):
    r = http.post("/v1/retrieve", json={"kb": "sample", "query": "默认端口", "k": 3, "mode": "hybrid"})
    assert r.status_code == 200
    hits = r.json()["hits"]
    assert len(hits) == 3 and [h["rank"] for h in hits] == [1, 2, 3]
    assert "8501" in hits[0]["text"] and stored(api_settings, "sample", [h["chunk_id"] for h in hits])
    assert all(h["fused"] is not None for h in hits)
    assert any(h["dense_rank"] for h in hits) and any(h["bm25_rank"] for h in hits)
    bm25 = http.post("/v1/retrieve", json={"kb": "sample", "query": "默认端口", "k": 3, "mode": "bm25"}).json()["hits"]
    assert all(h["dense_rank"] is None and h["bm25_rank"] for h in bm25)


# --- queue and binding --------------------------------------------------------------------------


def test_llm_gate_admits_parallel_plus_queue_then_refuses():
    gate = LLMGate(parallel=1, queue=2)
    running, release = threading.Event(), threading.Event()
    order = []

    def hold(admission, name):
        with admission:
            order.append(name)
            running.set()
            release.wait(10)

    admissions = [gate.admit() for _ in range(3)]
    with pytest.raises(LLMBusy, match="limit 1 \\+ 2"):
        gate.admit()
    threads = [threading.Thread(target=hold, args=(a, i)) for i, a in enumerate(admissions)]
    for t in threads:
        t.start()
    assert running.wait(5)
    time.sleep(0.1)
    assert len(order) == 1  # one at a time
    release.set()
    for t in threads:
        t.join(5)
    assert sorted(order) == [0, 1, 2] and gate.admitted == 0
    gate.admit().cancel()
    assert gate.admitted == 0


def test_serve_refuses_a_public_host_without_a_key(monkeypatch, capsys):
    monkeypatch.delenv("RAG_API_KEY", raising=False)
    assert serve_main(["--host", "0.0.0.0"]) == 2
    assert "RAG_API_KEY" in capsys.readouterr().err
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
