"""The API's knowledge-base admin on a real server: upload jobs, deletes, both stores, limits, locks, keys."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from rag import store
from rag.api.app import create_app
from tests.live_api import KEY, LiveServer, wait_job


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
