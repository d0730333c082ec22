"""A `rag.llm_server` child with llama.cpp parameter overrides, for `bench.llm_options`.

The child runs `rag.llm_server.main()` exactly as the app does, with `xllamacpp.CommonParams`
overrides (dotted names, or `env:NAME` for environment variables) applied just before the server starts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.common import REPO

CTX = 4096


def _resolve(value, draft_path: str):
    import xllamacpp

    if isinstance(value, list):
        return [_resolve(v, draft_path) for v in value]
    if isinstance(value, str) and value.startswith("enum:"):
        enum_name, member = value[5:].split(".")
        return getattr(getattr(xllamacpp, enum_name), member)
    if value == "draft:":
        return draft_path
    return value


def apply_overrides(params, overrides: list[tuple[str, object]], draft_path: str = "") -> None:
    """Set dotted attributes on a CommonParams (nested structs are views into it); skips "env:" ones."""
    for dotted, value in overrides:
        if dotted.startswith("env:"):
            continue
        *parents, leaf = dotted.split(".")
        obj = params
        for name in parents:
            obj = getattr(obj, name)
        if not hasattr(obj, leaf):
            raise AttributeError(f"CommonParams has no {dotted}")
        setattr(obj, leaf, _resolve(value, draft_path))


def child(argv: list[str]) -> int:
    """`--child JSON -- <rag.llm_server args>`: rag.llm_server.main() with overrides before Server()."""
    spec = json.loads(argv[0])
    for dotted, value in spec["overrides"]:
        if dotted.startswith("env:"):
            os.environ[dotted[4:]] = str(value)

    import xllamacpp

    from rag import llm_server

    real_server = xllamacpp.Server

    def server_with_overrides(params, *a, **kw):
        apply_overrides(params, [tuple(o) for o in spec["overrides"]], spec.get("draft", ""))
        print(f"bench.llm_options: overrides {spec['overrides']}", flush=True)
        return real_server(params, *a, **kw)

    xllamacpp.Server = server_with_overrides
    return llm_server.main(argv[1:])


# --- the running server ----------------------------------------------------------------------


class Server:
    """One `rag.llm_server` child with overrides; always stopped (SIGTERM, then SIGKILL)."""

    def __init__(self, model: Path, overrides, draft: Path | None, threads: int, log: Path) -> None:
        from rag.llm_server import free_port

        self.port = free_port()
        spec = json.dumps({"overrides": overrides, "draft": str(draft or "")})
        cmd = [sys.executable, "-m", "bench.llm_options", "--child", spec, "--", "--model", str(model),
               "--port", str(self.port), "--ctx", str(CTX), "--threads", str(threads)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        self.log = log
        with log.open("ab") as fh:
            self.log_offset = fh.tell()
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=fh, stderr=subprocess.STDOUT,
                                         env=env, cwd=str(REPO))
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_healthy(self, timeout_s: float = 180.0) -> float:
        t0 = time.perf_counter()
        with httpx.Client(timeout=2.0) as http:
            while time.perf_counter() - t0 < timeout_s:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.log_tail()}")
                try:
                    if http.get(self.url + "/health").status_code == 200:
                        return (time.perf_counter() - t0) * 1000
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        raise RuntimeError(f"server not healthy in {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        with self.log.open("rb") as fh:
            fh.seek(self.log_offset)
            return fh.read().decode("utf-8", "replace")[-n:]

    def log_text(self) -> str:
        return self.log_tail(10**7)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdin:
            self.proc.stdin.close()
