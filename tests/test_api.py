"""The HTTP API on a real uvicorn server on loopback: the official `openai` client for chat, httpx for the rest.

Chat generates with the embedded 0.5B model (greedy); retrieval and admin use the real bundled embedder,
FAISS and BM25 over a knowledge base of data/sample.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn
from pydantic import SecretStr

from rag import store
from rag.api.app import create_app
from rag.api.resources import LLMBusy, LLMGate
from rag.llm_server import free_port
from rag.serve import is_loopback
from rag.serve import main as serve_main

KEY = "test-key-123"
QUESTION = "BM25 中的参数 b = 0.75 控制的是什么？"


class LiveServer:
    """uvicorn serving an app on 127.0.0.1 in a thread (a real HTTP server, real sockets)."""

    def __init__(self, app) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def api_settings(sample_settings):
    settings = sample_settings.model_copy(update={"api_key": SecretStr(KEY), "max_file_mb": 0.05, "api_max_files": 3})
    assert KEY not in repr(settings) and KEY not in settings.model_dump_json()  # never in logs or cache keys
    return settings


@pytest.fixture(scope="module")
def server(api_settings):
    with LiveServer(create_app(api_settings)) as live:
        yield live


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=300) as client:
        yield client


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=300)


def stored(settings, kb: str, chunk_ids: list[str]) -> bool:
    """Whether every chunk id is in the current version of `kb` (looked up through the store contract)."""
    from rag.retrieve import open_retriever

    try:
        return len(open_retriever(settings.model_copy(update={"kb": kb})).state.chunks(chunk_ids)) == len(chunk_ids)
    except KeyError:
        return False


def wait_job(http, job_id: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish: {job}")


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


# --- knowledge-base admin ---------------------------------------------------------------------


def test_upload_job_retrievable_then_delete_gone(http):
    assert http.post("/v1/kbs", json={"name": "api_kb"}).status_code == 201
    assert http.post("/v1/kbs", json={"name": "api_kb"}).status_code == 409
    text = "星际物流系统的默认调度周期是 42 分钟，由 Orbital Scheduler 负责。\n".encode()
    files = [("files", ("调度.md", text, "text/markdown")), ("files", ("notes.exe", b"MZ", "application/octet-stream"))]
    r = http.post("/v1/kbs/api_kb/documents", files=files)
    assert r.status_code == 202, r.text
    job = wait_job(http, r.json()["job"])
    outcomes = {f["name"]: f for f in job["files"]}
    assert job["status"] == "done" and outcomes["调度.md"]["status"] == "added"
    assert outcomes["notes.exe"]["status"] == "rejected" and "unsupported file type" in outcomes["notes.exe"]["reason"]
    docs = http.get("/v1/kbs/api_kb/documents").json()["data"]
    assert [d["name"] for d in docs] == ["调度.md"]
    hits = http.post("/v1/retrieve", json={"kb": "api_kb", "query": "调度周期", "k": 1}).json()["hits"]
    assert hits and "42 分钟" in hits[0]["text"]

    doc_id = docs[0]["doc_ids"][0]
    r = http.delete(f"/v1/kbs/api_kb/documents/{doc_id}")
    assert r.status_code == 200 and r.json()["deleted"] == [doc_id]
    hits = http.post("/v1/retrieve", json={"kb": "api_kb", "query": "调度周期 Orbital Scheduler", "k": 5}).json()["hits"]
    assert all("42 分钟" not in h["text"] for h in hits)
    assert http.get("/v1/kbs/api_kb/documents").json()["data"] == []
    assert http.delete(f"/v1/kbs/api_kb/documents/{doc_id}").status_code == 404
    assert http.delete("/v1/kbs/api_kb").status_code == 200
    assert "api_kb" not in [k["name"] for k in http.get("/v1/kbs").json()["data"]]


def test_queries_are_answered_while_an_upload_writes_a_new_version(http):
    http.post("/v1/kbs", json={"name": "api_live"})
    first = [("files", ("a.md", "第一版文档：缓存淘汰策略使用 LRU。".encode(), "text/markdown"))]
    wait_job(http, http.post("/v1/kbs/api_live/documents", files=first).json()["job"])
    before = http.post("/v1/retrieve", json={"kb": "api_live", "query": "缓存淘汰", "k": 3}).json()["kb_version"]
    more = [("files", (f"b{i}.md", f"第二批文档 {i}：分片副本数为 {i + 3}。".encode(), "text/markdown")) for i in range(3)]
    job = http.post("/v1/kbs/api_live/documents", files=more).json()["job"]
    seen, statuses = set(), []
    while http.get(f"/v1/jobs/{job}").json()["status"] not in ("done", "failed"):
        r = http.post("/v1/retrieve", json={"kb": "api_live", "query": "缓存淘汰", "k": 3})
        statuses.append(r.status_code)
        seen.add(r.json()["kb_version"])
    after = http.post("/v1/retrieve", json={"kb": "api_live", "query": "分片副本数", "k": 4}).json()
    assert statuses and set(statuses) == {200}
    assert seen <= {before, after["kb_version"]} and after["kb_version"] != before
    assert any("分片副本数" in h["text"] for h in after["hits"])
    http.delete("/v1/kbs/api_live")


def test_scanned_pdf_upload_is_cited_with_its_page(http, client):
    http.post("/v1/kbs", json={"name": "api_scan"})
    pdf = (Path(__file__).parent / "fixtures" / "ocr" / "scanned.pdf").read_bytes()  # two image-only pages
    job = wait_job(http, http.post("/v1/kbs/api_scan/documents",
                                   files=[("files", ("scanned.pdf", pdf, "application/pdf"))]).json()["job"])
    assert job["status"] == "done" and job["files"][0]["status"] == "added", job
    hits = http.post("/v1/retrieve", json={"kb": "api_scan", "query": "混合检索融合的分数", "k": 1}).json()["hits"]
    assert (hits[0]["page"], hits[0]["page_end"]) == (1, 2) and "BM25" in hits[0]["text"]  # one chunk, two pages
    message = client.chat.completions.create(
        model="api_scan", messages=[{"role": "user", "content": "混合检索把哪些分数融合？"}],
        extra_body={"answer_mode": "extractive"}).choices[0].message
    refs = message.model_extra["references"]
    assert refs and refs[0]["page_end"] == 2
    assert any(q["page"] == 2 and "BM25" in q["text"] for r in refs for q in r["evidence"])  # the sentence's own page
    http.delete("/v1/kbs/api_scan")


def test_milvus_knowledge_base_through_the_api(sample_settings, tmp_path):
    """The same routes over the milvus store (Milvus Lite file): create, upload, retrieve, delete, drop."""
    settings = sample_settings.model_copy(update={"store": "milvus", "index_dir": tmp_path / "index",
                                                  "milvus_uri": str(tmp_path / "milvus.db")})
    with LiveServer(create_app(settings)) as live, httpx.Client(base_url=live.url, timeout=300) as http:
        assert http.post("/v1/kbs", json={"name": "mv"}).status_code == 201
        files = [("files", ("调度.md", "星际物流系统的默认调度周期是 42 分钟。".encode(), "text/markdown"))]
        job = wait_job(http, http.post("/v1/kbs/mv/documents", files=files).json()["job"])
        assert job["status"] == "done" and job["files"][0]["status"] == "added", job
        assert [m["id"] for m in http.get("/v1/models").json()["data"]] == ["mv"]
        assert http.get("/v1/kbs").json()["data"][0]["store"] == "milvus"
        hits = http.post("/v1/retrieve", json={"kb": "mv", "query": "调度周期", "k": 1}).json()["hits"]
        assert "42 分钟" in hits[0]["text"]
        [doc] = http.get("/v1/kbs/mv/documents").json()["data"]
        assert http.delete(f"/v1/kbs/mv/documents/{doc['doc_ids'][0]}").status_code == 200
        assert http.post("/v1/retrieve", json={"kb": "mv", "query": "调度周期", "k": 3}).json()["hits"] == []
        assert http.delete("/v1/kbs/mv").status_code == 200
        assert http.get("/v1/models").json()["data"] == []
        assert http.post("/v1/retrieve", json={"kb": "mv", "query": "x"}).status_code == 404
    from rag.stores.milvus import disconnect

    disconnect(settings)


def test_upload_names_cannot_escape_the_kb_folder(http, api_settings):
    http.post("/v1/kbs", json={"name": "api_escape"})
    index_dir = Path(api_settings.index_dir)
    files = [("files", ("../../../escape.md", "逃逸测试文本，用于检查路径。".encode(), "text/markdown")),
             ("files", ("..\\..\\win.md", "第二个文件的内容。".encode(), "text/markdown"))]
    r = http.post("/v1/kbs/api_escape/documents", files=files)
    assert r.status_code == 202
    job = wait_job(http, r.json()["job"])
    assert {f["name"] for f in job["files"]} == {"escape.md", "win.md"}
    folder = store.uploads_dir(index_dir, "api_escape")
    assert sorted(p.name for p in folder.iterdir()) == ["escape.md", "win.md"]
    assert not (index_dir.parent / "escape.md").exists() and not list(index_dir.parent.parent.glob("escape.md"))
    http.delete("/v1/kbs/api_escape")


def test_oversized_upload_is_413_and_nothing_is_written(http, api_settings):
    http.post("/v1/kbs", json={"name": "api_big"})
    big = b"x" * int(0.06 * 1024 * 1024)  # over the 0.05 MB limit of this server
    r = http.post("/v1/kbs/api_big/documents", files=[("files", ("big.txt", big, "text/plain"))])
    assert r.status_code == 413 and "big.txt" in r.json()["error"]["message"]
    assert not store.uploads_dir(Path(api_settings.index_dir), "api_big").exists()
    huge = b"x" * int(4 * 1024 * 1024)  # over the whole-request limit (3 files x 0.05 MB + 1 MB)
    r = http.post("/v1/kbs/api_big/documents", files=[("files", ("huge.txt", huge, "text/plain"))])
    assert r.status_code == 413
    r = http.post("/v1/retrieve", content=json.dumps({"kb": "sample", "query": "x" * (2 * 1024 * 1024)}),
                  headers={"content-type": "application/json"})
    assert r.status_code == 413  # JSON bodies: api_max_body_mb
    http.delete("/v1/kbs/api_big")


def test_second_writer_gets_409_not_a_hang(http, api_settings):
    http.post("/v1/kbs", json={"name": "api_locked"})
    lock = store.kb_lock(Path(api_settings.index_dir), "api_locked")  # as an ingest CLI would hold it
    try:
        t = time.monotonic()
        r = http.post("/v1/kbs/api_locked/documents", files=[("files", ("a.md", "内容".encode(), "text/markdown"))])
        assert r.status_code == 409 and r.json()["error"]["code"] == "kb_locked"
        assert time.monotonic() - t < 5
        assert http.delete("/v1/kbs/api_locked").status_code == 409
    finally:
        lock.release()
    assert http.delete("/v1/kbs/api_locked").status_code == 200


def test_every_v1_route_needs_the_key(server):
    for method, path in [("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("POST", "/v1/retrieve"),
                         ("GET", "/v1/kbs"), ("DELETE", "/v1/kbs/sample"), ("GET", "/v1/jobs/x")]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            r = httpx.request(method, f"{server.url}{path}", headers=headers, json={})
            assert r.status_code == 401, (method, path, headers)
            assert r.json()["error"]["type"] == "authentication_error"
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_errors_do_not_echo_server_paths(http, api_settings):
    r = http.post("/v1/retrieve", json={"kb": "no_such_kb", "query": "x"})
    assert r.status_code == 404
    assert str(Path(api_settings.index_dir).resolve()) not in r.text and str(api_settings.index_dir) not in r.text


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
