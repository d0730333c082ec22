"""The OpenAI-compatible client against the real embedded llama.cpp server (0.5B GGUF)."""

from __future__ import annotations

import socket
import time

import pytest

from rag.llm import LLMClient, LLMUnavailable, estimate_tokens
from rag.llm_server import EmbeddedServer, ensure_server, free_port
from rag.settings import Settings

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant. Answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
]


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory):
    """One embedded server for the whole session, on the bundled 0.5B GGUF."""
    from rag.models.gguf import GGUFS, assemble_gguf

    settings = Settings()
    try:
        path, _ = assemble_gguf(GGUFS["0.5b"], settings.cache_dir, progress=False)
    except Exception as e:  # parts not installed, checksum mismatch, disk full
        pytest.skip(f"the 0.5B GGUF cannot be provisioned into {settings.cache_dir}: {e}")
    server = EmbeddedServer(path, ctx=2048, threads=settings.llm_threads,
                            log_dir=tmp_path_factory.mktemp("llm-logs"))
    with server:
        yield server


@pytest.fixture
def client(llm_server):
    with LLMClient(llm_server.base_url, timeout_s=120, retries=1) as c:
        yield c


def _port_is_free(port: int) -> bool:
    """Nothing listens and a server could bind it again (SO_REUSEADDR, as servers do)."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            return False
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.llm
def test_generation_returns_text_and_usage(client):
    completion = client.chat(MESSAGES, temperature=0.0, max_tokens=24)
    assert completion.text.strip()
    assert completion.prompt_tokens > 10 and 0 < completion.completion_tokens <= 24
    assert completion.ms > 0 and completion.finish_reason in ("stop", "length")


@pytest.mark.llm
def test_stream_pieces_join_to_the_text(client):
    stream = client.stream(MESSAGES, temperature=0.0, max_tokens=24)
    pieces = list(stream)
    assert len(pieces) >= 3
    assert "".join(pieces) == stream.text and stream.text.strip()
    assert stream.completion_tokens == len(pieces) or stream.completion_tokens > 0
    assert stream.prompt_tokens > 10 and stream.done
    # Same greedy request, non-streamed: identical text.
    assert client.chat(MESSAGES, temperature=0.0, max_tokens=24).text == stream.text


@pytest.mark.llm
def test_count_tokens_uses_the_server_tokenizer(client):
    text = "检索增强生成 (RAG) combines retrieval with generation."
    count = client.count_tokens(text)
    assert client._tokenize_mode == "llama.cpp"
    assert 5 < count <= estimate_tokens(text)


@pytest.mark.llm
def test_health(client):
    assert client.health()


def test_closed_port_raises_unavailable_quickly():
    url = f"http://127.0.0.1:{free_port()}/v1"
    client = LLMClient(url, timeout_s=5, retries=1)
    t0 = time.perf_counter()
    with pytest.raises(LLMUnavailable, match=f"LLM server at {url} is not reachable.*RAG_LLM_BASE_URL"):
        client.chat(MESSAGES, max_tokens=4)
    assert time.perf_counter() - t0 < 3
    assert not client.health()
    with pytest.raises(LLMUnavailable):
        client.stream(MESSAGES)
    with pytest.raises(LLMUnavailable):
        client.count_tokens("abc")


def test_ensure_server_returns_a_configured_url_without_starting_anything():
    settings = Settings(llm_base_url="http://gpu-host:8000/v1/")
    assert ensure_server(settings) == "http://gpu-host:8000/v1"


def test_client_rejects_a_url_without_scheme():
    with pytest.raises(ValueError, match="must start with http"):
        LLMClient("localhost:8080/v1")


@pytest.mark.llm
def test_stop_frees_the_port_and_start_again_works(llm_server):
    port = llm_server.port
    llm_server.stop()
    assert not llm_server.alive()
    assert _port_is_free(port)
    llm_server.stop()  # idempotent
    llm_server.start()  # the session fixture stays usable for later tests
    with LLMClient(llm_server.base_url) as c:
        assert c.health()
