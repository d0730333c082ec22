"""Reranking stage end to end with a real (untrained) CrossEncoder, locally and over HTTP."""

import dataclasses
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from rag.embed import ModelNotAvailable, bundled_embedder_dir
from rag.models import ModelIntegrityError, sha256_file
from rag.models.onnx_bundle import RERANKER_EN, is_provisioned, provision
from rag.rerank import CrossEncoderReranker, HTTPReranker, bundled_reranker, load_reranker, rerank
from rag.settings import BUNDLED_RERANKER


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


# --- the bundled int8 ms-marco-MiniLM-L-12-v2 cross-encoder (onnxruntime) -----------------------------

QUESTION = "What is the response time for a P0 incident?"
RELEVANT = ("Incidents are classified by severity. A P0 incident (the whole service is down) must be "
            "acknowledged within 15 minutes by the on-call engineer, around the clock.")
IRRELEVANT = [
    "The web interface listens on port 8501 by default; change it with the PORT variable.",
    "Quarterly planning starts in the second week of the quarter with a review of last quarter's goals.",
    "Expense reports are due by the fifth working day of the following month.",
]


@pytest.fixture(scope="module")
def bundled(sample_settings):
    return load_reranker(sample_settings.model_copy(update={"reranker": BUNDLED_RERANKER}))


def test_bundled_cross_encoder_puts_the_answer_first(bundled):
    scores = bundled.scores(QUESTION, IRRELEVANT + [RELEVANT])
    assert scores[-1] == max(scores)
    assert scores[-1] - max(scores[:-1]) > 3.0  # a logit margin, not a tie broken by chance


def test_bundled_cross_encoder_reranks_real_hits(bundled, sample_retriever):
    question = "Is there a size limit for a single file?"
    hits = sample_retriever.search(question, mode="bm25", k=4)
    ranked = rerank(bundled, question, hits)
    assert [h.rerank for h in ranked] == sorted((h.rerank for h in ranked), reverse=True)
    assert "size limit" in ranked[0].chunk.text.lower()


def test_threads_do_not_change_scores_and_batch_size_keeps_the_order(sample_settings, bundled):
    passages = IRRELEVANT + [RELEVANT]
    one_thread = bundled_reranker(sample_settings.model_copy(update={"rerank_threads": 1}))
    assert one_thread.scores(QUESTION, passages) == pytest.approx(bundled.scores(QUESTION, passages), abs=1e-4)
    # int8 dynamic quantization scales activations per batch, so scores move slightly with the batch
    single = bundled_reranker(sample_settings.model_copy(update={"rerank_batch_size": 1})).scores(QUESTION, passages)
    batched = bundled.scores(QUESTION, passages)
    assert single == pytest.approx(batched, abs=0.5)
    assert sorted(range(4), key=single.__getitem__) == sorted(range(4), key=batched.__getitem__)


def test_max_tokens_truncates_the_passage(sample_settings, bundled):
    short = bundled_reranker(sample_settings.model_copy(update={"rerank_max_tokens": 24}))
    buried = IRRELEVANT[0] + " " + RELEVANT  # the answer starts after token 24
    assert short.scores(QUESTION, [buried])[0] < bundled.scores(QUESTION, [buried])[0] - 3.0


def test_bundled_model_provisioning_is_pinned(tmp_path):
    folder, worked = provision(RERANKER_EN, tmp_path)
    assert worked and sha256_file(folder / "model.onnx") == RERANKER_EN.files["model.onnx"]
    assert provision(RERANKER_EN, tmp_path) == (folder, False)
    (folder / "tokenizer.json").write_text("{}")  # a damaged copy is not taken as provisioned, and is repaired
    assert not is_provisioned(RERANKER_EN, folder)
    assert provision(RERANKER_EN, tmp_path) == (folder, True) and is_provisioned(RERANKER_EN, folder)
    wrong = dataclasses.replace(RERANKER_EN, name="wrong", files={"tokenizer.json": "0" * 64})
    with pytest.raises(ModelIntegrityError, match="does not match the pinned"):
        provision(wrong, tmp_path)
    assert not (tmp_path / "wrong").exists()


def test_english_cross_encoder_leaves_chinese_questions_in_fused_order(bundled, sample_retriever):
    question = "Web 界面的默认端口是多少？"
    hits = sample_retriever.search(question, k=6)
    order = [h.chunk.id for h in hits]
    ranked = rerank(bundled, question, hits)
    assert [h.chunk.id for h in ranked] == order and all(h.rerank is None for h in ranked)
    english_question = "Which file formats are supported?"
    english = rerank(bundled, english_question, sample_retriever.search(english_question, mode="bm25", k=3))
    assert all(h.rerank is not None for h in english) and "faq-en" in english[0].chunk.doc_id
