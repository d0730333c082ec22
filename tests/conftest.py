"""Shared fixtures: a real knowledge base of the sample corpus, built once per session."""

import os
from pathlib import Path

import pytest

from rag.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
SHARED = ROOT.parent / "shared"

# Generation tests run the small bundled model (the CI machine has 2 cores), greedily so that
# they are repeatable; subprocesses (streamlit, ingest) inherit this.
os.environ.setdefault("RAG_LLM_SIZE", "0.5b")
os.environ.setdefault("RAG_TEMPERATURE", "0")
_E5 = Path(os.environ.get("RAG_CACHE_DIR", Path.home() / ".cache" / "rag-local")) / "multilingual-e5-small"
if _E5.is_dir():  # lets the chunker test count with the real e5 tokenizer
    os.environ.setdefault("E5_DIR", str(_E5))


@pytest.fixture(scope="session")
def sample_settings(tmp_path_factory) -> Settings:
    """Settings pointing at a real index of data/sample (bundled embedder, real FAISS + BM25)."""
    from ingest.pipeline import run_ingest

    settings = Settings(index_dir=tmp_path_factory.mktemp("index"), kb="sample")
    report = run_ingest([SAMPLE], settings, progress=False)
    assert report.wrote and not report.failed
    return settings


@pytest.fixture(scope="session")
def sample_retriever(sample_settings):
    """A retriever over the sample knowledge base."""
    from rag.retrieve import open_retriever

    return open_retriever(sample_settings)


@pytest.fixture(scope="session")
def llm(sample_settings):
    """The real embedded llama.cpp server with the bundled 0.5B model (shared by the session)."""
    from rag.llm import client_from_settings
    from rag.models.gguf import GGUFS, is_provisioned

    if not is_provisioned(GGUFS["0.5b"], sample_settings.cache_dir):
        pytest.skip("bundled 0.5B GGUF not provisioned: run `python -m rag.models`")
    return client_from_settings(sample_settings)


# --- the HTTP API on a live server (tests/test_api*.py; helpers in tests/live_api.py) ---------------


@pytest.fixture(scope="module")
def api_settings(sample_settings):
    """The sample knowledge base's settings with an API key and small upload limits."""
    from pydantic import SecretStr

    from tests.live_api import KEY

    settings = sample_settings.model_copy(update={"api_key": SecretStr(KEY), "max_file_mb": 0.05, "api_max_files": 3})
    assert KEY not in repr(settings) and KEY not in settings.model_dump_json()  # never in logs or cache keys
    return settings


@pytest.fixture(scope="module")
def server(api_settings):
    """`rag.serve`'s app on a real uvicorn server on loopback."""
    from rag.api.app import create_app
    from tests.live_api import LiveServer

    with LiveServer(create_app(api_settings)) as live:
        yield live


@pytest.fixture(scope="module")
def http(server):
    """httpx with the API key."""
    import httpx

    from tests.live_api import KEY

    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=300) as client:
        yield client


@pytest.fixture(scope="module")
def client(server):
    """The official openai client with the API key."""
    import openai

    from tests.live_api import KEY

    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=300)
