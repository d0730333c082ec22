"""The bundled English embedder (int8 bge-small-en-v1.5 on onnxruntime): real vectors, a real English index."""

import numpy as np
import pytest

from rag.embed import load_embedder
from rag.settings import BUNDLED_EMBEDDER, BUNDLED_EN_EMBEDDER, Settings
from tests.conftest import SAMPLE


@pytest.fixture(scope="module")
def bge():
    return load_embedder(Settings(embedder=BUNDLED_EN_EMBEDDER))


def test_bge_vectors_are_normalized_and_rank_the_answer_first(bge):
    passages = [
        "Five formats are supported: .txt, .md, .html, .pdf and .docx. Anything else is skipped.",
        "The on-call engineer acknowledges a P0 incident within 15 minutes.",
        "Quarterly planning starts in the second week of the quarter.",
    ]
    p = bge.encode_passages(passages)
    q = bge.encode_queries(["Which file types can I index?"])
    assert p.shape == (3, 384) and p.dtype == np.float32
    assert np.allclose(np.linalg.norm(p, axis=1), 1.0, atol=1e-5)
    assert int(np.argmax(q @ p.T)) == 0
    assert bge.query_prefix.startswith("Represent this sentence") and bge.passage_prefix == ""


def test_prefixes_follow_the_embedder_unless_set():
    assert Settings().query_prefix == "query: "
    assert Settings(embedder=BUNDLED_EN_EMBEDDER).query_prefix.startswith("Represent this sentence")
    assert Settings(embedder=BUNDLED_EN_EMBEDDER, query_prefix="q: ").query_prefix == "q: "


def test_english_knowledge_base_with_bge(tmp_path, bge):
    from ingest.pipeline import run_ingest
    from rag.retrieve import open_retriever

    settings = Settings(index_dir=tmp_path, kb="en", embedder=BUNDLED_EN_EMBEDDER)
    report = run_ingest([SAMPLE / "faq-en.md"], settings, progress=False)
    assert report.wrote and not report.failed
    retriever = open_retriever(settings)
    assert retriever.embedder is bge  # one shared instance per model
    hits = retriever.search("Is there a limit on how big a file can be?", mode="dense", k=3)
    assert any("size limit" in h.chunk.text.lower() or "MB" in h.chunk.text for h in hits)
    with pytest.raises(Exception, match="embedder"):  # an index keeps the embedder it was built with
        open_retriever(Settings(index_dir=tmp_path, kb="en", embedder=BUNDLED_EMBEDDER))


def test_bge_counts_each_text_on_its_own(bge):
    """The chunker's counts: no padding to a batch's longest text, no truncation at the model's limit."""
    short, long = "a b", "word " * 700
    assert bge.count_tokens([short, long]) == bge.count_tokens([short]) + bge.count_tokens([long]) == [4, 702]
