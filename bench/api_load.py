"""HTTP API under load: concurrent /v1/retrieve clients and chats against `python -m rag.serve`, then the
same while `python -m ingest` writes a new version of the same knowledge base.

The server runs as its own process on loopback (embedded 0.5B model, greedy); the clients are threads of
this process. Every hit and every reference is checked against the chunks of the knowledge-base version
the response names (a watcher reads each version's chunk ids as soon as it appears), so an answer citing
a chunk that is not in the version it was retrieved from is counted.

`python -m bench.api_load [--quick]`
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.common import LLM_NOTES, REPO, SHARED, module_main, pct, questions, table

SCIFACT_CORPUS = SHARED / "datasets" / "scifact" / "corpus.jsonl"


@dataclass
class Tally:
    """Latencies and failures of one kind of request during one phase."""

    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    foreign: int = 0  # hits/references not in the version the response names
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, seconds: float, error: str = "", foreign: int = 0) -> None:
        with self.lock:
            if error:
                self.errors[error] = self.errors.get(error, 0) + 1
            else:
                self.latencies.append(seconds)
            self.foreign += foreign

    def row(self, name: str, wall_s: float) -> list:
        ms = [x * 1000 for x in self.latencies]
        n_err = sum(self.errors.values())
        return [name, len(ms) + n_err, len(ms) / wall_s, pct(ms, 50), pct(ms, 95), pct(ms, 99),
                n_err if not self.errors else f"{n_err} {self.errors}", self.foreign]


class Versions:
    """Chunk ids of every knowledge-base version seen (files backend: one folder per version)."""

    def __init__(self, index_dir: Path, kb: str) -> None:
        self.index_dir, self.kb = index_dir, kb
        self.chunks: dict[str, set[str]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _read(self) -> None:
        from rag import store

        version = store.current_version(self.index_dir, self.kb)
        if version and version not in self.chunks:
            folder = self.index_dir / ".versions" / self.kb / version
            with (folder / "chunks.jsonl").open(encoding="utf-8") as fh:
                self.chunks[version] = {json.loads(line)["id"] for line in fh if line.strip()}

    def _watch(self) -> None:
        while not self.stop.is_set():
            try:
                self._read()
            except OSError:
                pass
            time.sleep(0.05)

    def foreign(self, version: str, chunk_ids: list[str]) -> int:
        known = self.chunks.get(version)
        if known is None:
            time.sleep(0.2)  # the watcher may not have read a version that appeared a moment ago
            known = self.chunks.get(version, set())
        return sum(cid not in known for cid in chunk_ids)


def _retrieve(client: httpx.Client, question: str) -> tuple[httpx.Response, Callable[[], tuple[str, list[str]]]]:
    r = client.post("/v1/retrieve", json={"kb": "notes", "query": question, "k": 10})
    return r, lambda: (r.json()["kb_version"], [h["chunk_id"] for h in r.json()["hits"]])


def _chat(client: httpx.Client, question: str) -> tuple[httpx.Response, Callable[[], tuple[str, list[str]]]]:
    r = client.post("/v1/chat/completions", json={"model": "notes", "messages": [{"role": "user", "content": question}]})

    def cited() -> tuple[str, list[str]]:
        message = r.json()["choices"][0]["message"]
        return message["kb_version"], [cid for ref in message["references"] for cid in ref["chunk_ids"]]

    return r, cited


def _client(request, url: str, qs: list[str], running: Callable[[], bool], tally: Tally, versions: Versions,
            offset: int) -> None:
    """One client asking in a loop; each answer's chunk ids are checked against the version it names."""
    with httpx.Client(base_url=url, timeout=600) as client:
        i = offset
        while running():
            t = time.perf_counter()
            question = qs[i % len(qs)]
            i += 1
            try:
                response, chunk_ids = request(client, question)
            except httpx.HTTPError as e:
                tally.add(0, type(e).__name__)
                continue
            if response.status_code != 200:
                tally.add(0, str(response.status_code))
                continue
            elapsed = time.perf_counter() - t
            tally.add(elapsed, foreign=versions.foreign(*chunk_ids()))


def _phase(url: str, qs: list[str], seconds: float, n_retrieve: int, n_chat: int, versions: Versions,
           during: Callable[[], None] | None = None) -> tuple[Tally, Tally, float]:
    """Run the clients for `seconds`, or until `during` (run in its own thread) has finished if that is later;
    chats finish the question they are on. Returns the tallies and the clients' wall time."""
    retrieval, chats = Tally(), Tally()
    until = time.monotonic() + seconds
    done = threading.Event()
    if during is None:
        done.set()
    else:
        threading.Thread(target=lambda: (during(), done.set()), daemon=True).start()

    def running() -> bool:
        return time.monotonic() < until or not done.is_set()

    threads = [threading.Thread(target=_client, args=(_retrieve, url, qs, running, retrieval, versions, i))
               for i in range(n_retrieve)]
    threads += [threading.Thread(target=_client, args=(_chat, url, qs, running, chats, versions, 7 * i))
                for i in range(n_chat)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    done.wait()
    return retrieval, chats, wall


def _start_server(index_dir: Path, port: int, log: Path) -> subprocess.Popen:
    env = os.environ | {"RAG_LLM_SIZE": "0.5b", "RAG_TEMPERATURE": "0", "RAG_MAX_TOKENS": "128",
                        "RAG_API_LLM_QUEUE": "8"}
    env.pop("RAG_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "rag.serve", "--port", str(port), "--index-dir", str(index_dir),
                             "--log-level", "warning"], cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"rag.serve did not start: {log.read_text()[-2000:]}")


def _hundred_documents(folder: Path, n: int) -> Path:
    """`n` SciFact abstracts as text files: a real folder of small documents to ingest."""
    folder.mkdir(parents=True, exist_ok=True)
    with SCIFACT_CORPUS.open(encoding="utf-8") as fh:
        for _, line in zip(range(n), fh):
            doc = json.loads(line)
            (folder / f"scifact-{doc['_id']}.txt").write_text(f"{doc['title']}\n\n{doc['text']}\n", encoding="utf-8")
    return folder


def run(quick: bool) -> str:
    from rag.llm_server import free_port

    seconds, n_retrieve, n_chat, n_docs = (15, 8, 2, 20) if quick else (60, 32, 4, 100)
    work = Path(tempfile.mkdtemp(prefix="bench-api-"))
    index_dir = work / "index"
    env = os.environ | {"RAG_LLM_SIZE": "0.5b"}
    subprocess.run([sys.executable, "-m", "ingest", str(LLM_NOTES), "--kb", "notes", "--index-dir", str(index_dir),
                    "--quiet"], cwd=REPO, env=env, check=True, capture_output=True)
    port = free_port()
    server = _start_server(index_dir, port, work / "serve.log")
    url = f"http://127.0.0.1:{port}"
    versions = Versions(index_dir, "notes")
    versions.thread.start()
    qs = questions(40)
    rows = []
    try:
        # warm: load the knowledge base and start the embedded LLM before timing
        httpx.post(f"{url}/v1/retrieve", json={"kb": "notes", "query": qs[0]}, timeout=300)
        httpx.post(f"{url}/v1/chat/completions", timeout=600,
                   json={"model": "notes", "messages": [{"role": "user", "content": qs[1]}]})
        r, c, wall = _phase(url, qs, seconds, n_retrieve, 0, versions)
        rows.append(r.row(f"retrieve alone ({n_retrieve} clients)", wall))
        r, c, wall = _phase(url, qs, seconds, 0, n_chat, versions)
        rows.append(c.row(f"chat alone ({n_chat} clients, 0.5B)", wall))

        docs = _hundred_documents(work / "docs", n_docs)
        ingest_s: dict[str, float] = {}

        def ingest() -> None:
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "ingest", str(docs), "--kb", "notes", "--index-dir", str(index_dir),
                            "--quiet"], cwd=REPO, env=env, check=True, capture_output=True)
            ingest_s["s"] = time.perf_counter() - t

        before = len(versions.chunks)
        r, c, wall = _phase(url, qs, seconds, n_retrieve, n_chat, versions, during=ingest)
        rows.append(r.row(f"retrieve during ingest ({n_retrieve} clients)", wall))
        rows.append(c.row(f"chat during ingest ({n_chat} clients)", wall))
        new_versions = len(versions.chunks) - before
    finally:
        versions.stop.set()
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(work, ignore_errors=True)
    return "\n\n".join([
        "## API load (`python -m rag.serve`)",
        f"Server: its own process on loopback, embedded 0.5B (greedy, max 128 tokens), one LLM sequence at a time "
        f"with a queue of 8; clients: threads of the bench process on the same 2 cores. Each phase "
        f"{seconds} s (the ingest phase: until the ingest has finished). Knowledge base: llm-notes-zh; the ingest "
        f"(`python -m ingest`, another process) adds {n_docs} SciFact abstracts ({ingest_s.get('s', float('nan')):.0f} s, "
        f"{new_versions} new version(s) seen while the clients ran).",
        table(["phase", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors",
               "hits/refs not in their version"], rows),
    ])


if __name__ == "__main__":
    sys.exit(module_main(run, __doc__))
