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
