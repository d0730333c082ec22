"""The embedded LLM backend: llama.cpp's own OpenAI-compatible server, run in a child process.

"Embedded" means the app starts `python -m rag.llm_server` with the bundled GGUF on 127.0.0.1 and
then talks to it over HTTP exactly like it would talk to vLLM or Ollama (see `rag.llm`). The child
holds the model; the app process never loads a generative model. The child exits when it gets
SIGTERM, when its stdin closes, or when its parent process disappears.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

logger = logging.getLogger(__name__)

_PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # folder that holds `rag/`
_LOG_ROTATE_BYTES = 5 << 20


class ServerStartError(RuntimeError):
    """The embedded llama.cpp server died or did not become healthy in time."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free right now (bind to 0, read the port, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _tail(path: Path, offset: int, n_chars: int = 2000) -> str:
    """The last characters this server wrote to its (shared, appended) log file."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError as e:
        return f"<log unreadable: {e}>"
    return data.decode("utf-8", "replace")[-n_chars:].strip() or "<empty log>"


class EmbeddedServer:
    """llama.cpp's HTTP server for one GGUF in a child process on 127.0.0.1 (a context manager)."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        ctx: int = 4096,
        threads: int = 0,
        log_dir: str | Path | None = None,
        start_timeout_s: float = 120.0,
    ) -> None:
        self.model_path = Path(model_path)
        self.ctx = ctx
        self.threads = threads or os.cpu_count() or 1
        self.log_dir = Path(log_dir) if log_dir else self.model_path.parent / "logs"
        self.start_timeout_s = start_timeout_s
        self.port: int | None = None
        self.start_ms: float | None = None  # process start -> healthy, of the last start
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._atexit = False

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible root, e.g. http://127.0.0.1:PORT/v1."""
        if self.port is None:
            raise RuntimeError("EmbeddedServer is not started")
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def log_path(self) -> Path:
        """Where the child's stdout and stderr go."""
        return self.log_dir / f"llm-server-{self.model_path.stem}.log"

    def alive(self) -> bool:
        """True while the child process runs."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> EmbeddedServer:
        """Start the child and wait for /health; no-op when already running."""
        with self._lock:
            if self.alive():
                return self
            if not self.model_path.is_file():
                raise FileNotFoundError(f"GGUF model not found: {self.model_path}")
            # The free port can be taken between our probe and the child's bind: retry once.
            for attempt in (1, 2):
                try:
                    self._start_once()
                    break
                except ServerStartError:
                    if attempt == 2 or self.alive():
                        raise
                    logger.warning("llama.cpp server failed to start, retrying on another port")
            if not self._atexit:  # once per object, however often it restarts
                atexit.register(self.stop)
                self._atexit = True
            return self

    def _start_once(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.log_path.exists() and self.log_path.stat().st_size > _LOG_ROTATE_BYTES:
            self.log_path.unlink(missing_ok=True)
        self.port = free_port()
        cmd = [
            sys.executable, "-m", "rag.llm_server", "--model", str(self.model_path),
            "--port", str(self.port), "--ctx", str(self.ctx), "--threads", str(self.threads),
        ]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PACKAGE_ROOT), env.get("PYTHONPATH")]))
        t0 = time.perf_counter()
        with self.log_path.open("ab") as log:
            offset = log.tell()
            # stdin stays an open pipe: the child exits when it closes (i.e. when we die).
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=str(_PACKAGE_ROOT),
            )
        logger.info("starting llama.cpp server pid=%s port=%s model=%s", self._proc.pid, self.port,
                    self.model_path.name)
        self._wait_healthy(offset)
        self.start_ms = (time.perf_counter() - t0) * 1000
        logger.info("llama.cpp server healthy at %s after %.0f ms", self.base_url, self.start_ms)

    def _wait_healthy(self, log_offset: int) -> None:
        """Poll /health until ok; raise with the child's log tail if it dies or times out."""
        url = f"http://127.0.0.1:{self.port}/health"
        deadline = time.monotonic() + self.start_timeout_s
        with httpx.Client(timeout=2.0) as http:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise ServerStartError(
                        f"llama.cpp server exited with code {self._proc.returncode} while starting "
                        f"({self.model_path.name}, port {self.port}); log {self.log_path}:\n"
                        f"{_tail(self.log_path, log_offset)}"
                    )
                try:
                    if http.get(url).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        self._kill()
        raise ServerStartError(
            f"llama.cpp server did not become healthy at {url} within {self.start_timeout_s:.0f} s; "
            f"log {self.log_path}:\n{_tail(self.log_path, log_offset)}"
        )

    def stop(self, timeout_s: float = 10.0) -> None:
        """Terminate the child (SIGTERM, then SIGKILL after `timeout_s`); idempotent."""
        with self._lock:
            self._kill(timeout_s)

    def _kill(self, timeout_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdin:
            proc.stdin.close()

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --- one shared server per process ----------------------------------------------------------

_SHARED: dict[tuple[str, int, int], EmbeddedServer] = {}
_SHARED_LOCK = threading.Lock()


def ensure_server(settings) -> str:
    """The LLM base URL: `settings.llm_base_url` if set, else a shared embedded server's URL.

    The embedded server uses the bundled GGUF for `settings.llm_size` (assembled into
    `settings.cache_dir` on first use) and is shared per (GGUF, ctx, threads) in this process;
    it logs to `settings.cache_dir/logs/` and stops when the process exits.
    """
    if settings.llm_base_url:
        return settings.llm_base_url.rstrip("/")
    from rag.models.gguf import GGUFS, assemble_gguf

    path, _ = assemble_gguf(GGUFS[settings.llm_size], Path(settings.cache_dir))
    threads = settings.llm_threads or os.cpu_count() or 1
    key = (str(path), settings.llm_ctx, threads)
    with _SHARED_LOCK:  # one start at a time; the others wait and reuse it
        server = _SHARED.get(key)
        if server is None:
            server = EmbeddedServer(path, ctx=settings.llm_ctx, threads=threads,
                                    log_dir=Path(settings.cache_dir) / "logs")
            _SHARED[key] = server
        server.start()  # also restarts a server whose child died
        return server.base_url


# --- the child process ----------------------------------------------------------------------


def _watch_parent(stop: threading.Event, parent: int) -> None:
    """Set `stop` when stdin closes (parent gone or stop()) or the parent pid changes."""

    def read_stdin() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        stop.set()

    threading.Thread(target=read_stdin, daemon=True).start()
    while not stop.wait(1.0):
        if os.getppid() != parent:
            stop.set()


def main(argv: list[str] | None = None) -> int:
    """Serve one GGUF with llama.cpp's HTTP server until stdin closes or SIGTERM.

    Example: python -m rag.llm_server --model ~/.cache/rag-local/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf --port 18080
    """
    parser = argparse.ArgumentParser(description=main.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="path of the GGUF file")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--ctx", type=int, default=4096, help="context window in tokens")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    args = parser.parse_args(argv)

    # llama.cpp's CPU threads synchronise through OpenMP (libgomp) barriers, where a waiting thread
    # spins up to GOMP_SPINCOUNT times (default 300,000, milliseconds) before it sleeps. While other
    # processes use the cores, that spinning sometimes collapses generation on 2 cores from ~34 to
    # 0.2-3 tok/s (5 of 16 loaded runs in bench.llm_options; 1 of 15 with 1,000 spins). 1,000 spins
    # cost nothing on an idle machine (prompt 90 vs 91 tok/s, generation 33.4 vs 33.9 tok/s).
    # libgomp reads it when it is loaded, i.e. at the import below; a value in the environment wins.
    os.environ.setdefault("GOMP_SPINCOUNT", "1000")

    import xllamacpp

    threads = args.threads or os.cpu_count() or 1
    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.n_ctx = args.ctx
    params.port = args.port
    params.hostnames = [args.host]
    params.n_parallel = 1  # one sequence at a time: all cores on the current request
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    parent = os.getppid()
    server = xllamacpp.Server(params)  # returns once listening
    print(f"rag.llm_server: listening at {server.listening_address}", flush=True)
    _watch_parent(stop, parent)
    print("rag.llm_server: stopping", flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip native teardown: the OS frees the model memory and the port


if __name__ == "__main__":
    sys.exit(main())
