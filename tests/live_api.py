"""A real uvicorn server on loopback for the API tests, its clients, and helpers (imported by tests/test_api*.py)."""

from __future__ import annotations

import threading
import time

import uvicorn

from rag.llm_server import free_port

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
