"""Reranking stage end to end with a real (untrained) CrossEncoder, locally and over HTTP."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from rag.embed import ModelNotAvailable, bundled_embedder_dir
from rag.rerank import CrossEncoderReranker, HTTPReranker, load_reranker, rerank


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory, sample_settings):
    """A CrossEncoder built from the bundled e5 weights with a fresh (untrained) scoring head."""
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(bundled_embedder_dir(sample_settings.cache_dir)), num_labels=1, device="cpu")
    folder = tmp_path_factory.mktemp("cross-encoder")
    model.save(str(folder))
    return folder


def test_cross_encoder_scores_and_orders_hits(cross_encoder_dir, sample_retriever):
    reranker = CrossEncoderReranker(str(cross_encoder_dir), device="cpu")
    hits = sample_retriever.search("BM25 的 k1 参数是什么意思？", k=8)
    expected = reranker.scores("BM25 的 k1 参数是什么意思？", [h.chunk.text for h in hits])
    ranked = rerank(reranker, "BM25 的 k1 参数是什么意思？", hits)
    assert all(h.rerank is not None and h.fused is not None for h in ranked)
    assert [h.rerank for h in ranked] == sorted(expected, reverse=True)


def test_rerank_mode_in_the_eval_command(cross_encoder_dir, sample_settings, tmp_path, monkeypatch):
    from rag.eval.__main__ import main

    monkeypatch.setenv("RAG_RERANKER", str(cross_encoder_dir))
    out = tmp_path / "r.json"
    args = ["retrieval", "--kb", sample_settings.kb, "--index-dir", str(sample_settings.index_dir),
            "--qa", "data/qa/sample.jsonl", "--modes", "hybrid,rerank", "--json", str(out), "--quiet"]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert set(report["modes"]) == {"hybrid", "rerank"}
    assert 0 <= report["modes"]["rerank"]["mrr@10"] <= 1


class _RerankHandler(BaseHTTPRequestHandler):
    model = None
    shape = "vllm"

    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        docs = body.get("documents") or body.get("texts")
        scores = self.model.scores(body["query"], docs)
        if self.shape == "vllm":
            payload = {"results": [{"index": i, "relevance_score": s} for i, s in enumerate(scores)]}
        else:  # Text Embeddings Inference
            payload = [{"index": i, "score": s} for i, s in sorted(enumerate(scores), key=lambda p: -p[1])]
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("shape", ["vllm", "tei"])
def test_http_reranker_against_a_loopback_server(cross_encoder_dir, shape):
    local = CrossEncoderReranker(str(cross_encoder_dir), device="cpu")
    handler = type("H", (_RerankHandler,), {"model": local, "shape": shape})
    server = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        remote = HTTPReranker(f"http://127.0.0.1:{server.server_port}/rerank", model="test")
        passages = ["BM25 是稀疏检索", "向量检索用 FAISS", "值班每周一轮换"]
        assert remote.scores("什么是 BM25", passages) == pytest.approx(local.scores("什么是 BM25", passages), abs=1e-5)
    finally:
        server.shutdown()


def test_none_and_unavailable_rerankers(sample_settings):
    assert load_reranker(sample_settings.model_copy(update={"reranker": "none"})) is None
    with pytest.raises(ModelNotAvailable, match="no network"):
        CrossEncoderReranker("BAAI/not-a-cached-reranker", device="cpu")
