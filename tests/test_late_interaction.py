"""Late interaction: the bundled ColBERT encoder, the stored int8 token vectors and the re-scoring stage."""

import json

import numpy as np
import pytest

from ingest.pipeline import run_ingest
from rag import late_interaction, store
from rag.late_interaction import TokenCodec, TokenVectors, maxsim, query_text, rescored
from rag.retrieve import open_retriever
from rag.settings import Settings
from tests.test_auto_embedder import CHINESE, ENGLISH, _docs


def _states(n: int, seed: int = 0) -> np.ndarray:
    """Anisotropic token-like states: a shared offset plus a few strong directions plus noise."""
    rng = np.random.default_rng(seed)
    return (5.0 + rng.normal(size=(n, 6)) @ rng.normal(size=(6, 384)) * 2 + rng.normal(size=(n, 384)) * 0.3).astype(np.float32)


def test_codec_stores_int8_that_decodes_to_the_projection(tmp_path):
    states = _states(3000)
    codec = TokenCodec.fit(states, 32)
    codes = codec.encode(states)
    assert codes.dtype == np.int8 and codes.shape == (3000, 32)
    cosine = (codec.decode(codes) * codec.project(states)).sum(axis=1)
    assert cosine.min() > 0.99
    codec.save(tmp_path)
    loaded = TokenCodec.load(tmp_path)
    assert all(np.array_equal(getattr(loaded, f), getattr(codec, f)) for f in ("mean", "basis", "scale"))
    assert TokenCodec.fit(states[:10], 128).dims == 9  # never wider than the sample allows


def test_token_rows_follow_the_chunks_they_belong_to(tmp_path):
    codec = TokenCodec.fit(_states(500), 16)
    rows = [codec.encode(_states(n, seed=n)) for n in (3, 5, 2)]
    vectors = TokenVectors.empty(codec).rebuilt(np.zeros(0, bool), rows)
    assert len(vectors) == 3 and [len(vectors.row(i)) for i in range(3)] == [3, 5, 2]
    later = vectors.rebuilt(np.array([True, False, True]), [rows[1]])
    assert [len(later.row(i)) for i in range(3)] == [3, 2, 5]
    assert np.array_equal(later.row(1), rows[2]) and np.array_equal(later.row(2), rows[1])
    later.save(tmp_path)
    loaded = TokenVectors.load(tmp_path)
    assert np.array_equal(loaded.row(2), rows[1]) and np.array_equal(loaded.offsets, later.offsets)


def test_rescoring_mixes_min_max_scores_within_the_fused_range():
    fused = [("a", 0.9), ("b", 0.8), ("c", 0.5)]
    sims = {"a": 10.0, "b": 12.0, "c": 20.0}
    assert [k for k, _ in rescored(fused, sims, 1.0)] == ["c", "b", "a"]
    assert rescored(fused, sims, 0.0) == fused
    mixed = rescored(fused, sims, 0.7)  # a: 0.3 * 1 + 0.7 * 0 = 0.3; b: 0.3 * 0.75 + 0.7 * 0.2 = 0.365; c: 0.7
    assert [k for k, _ in mixed] == ["c", "b", "a"]
    assert all(0.5 <= s <= 0.9 for _, s in mixed) and mixed[0][1] == pytest.approx(0.5 + 0.4 * 0.7)


def test_the_english_encoder_reads_the_query_s_latin_text():
    assert query_text("How long is a backup retained?") == "How long is a backup retained?"
    assert query_text("备份保留多久? How long is a backup retained?") == "? How long is a backup retained?"
    assert query_text("备份保留多久?") == "" and query_text("LoRA 是什么?") == ""


def test_colbert_token_vectors_match_the_passage_that_answers(tmp_path):
    encoder = late_interaction.load_encoder(Settings(), late_interaction.record(128))
    passages = [text.split("\n\n", 1)[1] for text in ENGLISH.values()]
    states = encoder.documents(passages)
    assert all(s.shape[1] == 384 for s in states)
    assert len(encoder.documents(["red, green; blue."])[0]) == 6  # [CLS] [unused1] red green blue [SEP]
    query = encoder.query("How long is a backup retained?")
    assert query.shape == (32, 384)
    codec = TokenCodec.fit(np.concatenate(states), 64)
    scores = [maxsim(codec.project(query), codec.decode(codec.encode(s))) for s in states]
    assert int(np.argmax(scores)) == 0  # backups.md


def test_english_knowledge_base_stores_token_vectors_and_rescores_with_them(tmp_path):
    settings = Settings(index_dir=tmp_path / "index", kb="en")
    docs = _docs(tmp_path / "docs", ENGLISH)
    assert run_ingest([docs], settings, progress=False).wrote
    manifest = store.peek_manifest(settings)
    assert manifest.late == late_interaction.record(128)
    retriever = open_retriever(settings)
    kb = retriever.state
    ids = [c.id for c in kb.state.chunks]
    before = kb.token_vectors(ids)
    assert retriever.late is not None and len(kb.state.late) == len(ids) == len(before)

    question = "How long is a backup retained?"
    result = retriever.search_timed(question, k=3)
    assert "late" in result.timings_ms and result.hits[0].chunk.doc_id.endswith("backups.md")
    fused = retriever._fuse(question, retriever.dense_ranking(question, 50), retriever.bm25_ranking(question, 50), "hybrid")
    codec = kb.token_codec
    query = codec.project(retriever.late.query(question))
    sims = {key: maxsim(query, codec.decode(codes)) for key, codes in kb.token_vectors([k for k, _ in fused]).items()}
    expected = rescored(fused, sims, settings.late_weight)
    assert [(h.chunk.id, h.fused) for h in result.hits] == [(k, pytest.approx(s)) for k, s in expected[:3]]
    off = retriever.with_settings(settings.model_copy(update={"late_interaction": "off"}))
    assert [h.chunk.id for h in off.search(question, k=3)] == [k for k, _ in fused[:3]]
    assert retriever.late_rescored("备份保留多久?", fused) == fused  # no English text: no re-scoring

    (docs / "leave.md").unlink()  # a deleted document takes its token rows along; the others keep theirs
    (docs / "security.md").write_text("# Security\n\nPasswords rotate every ninety days; hardware keys are "
                                      "required for production access.\n", encoding="utf-8")
    assert run_ingest([docs], settings, progress=False).wrote
    kb = open_retriever(settings).state
    now = {c.id: c for c in kb.state.chunks}
    assert len(kb.state.late) == len(now) and not any(c.doc_id.endswith("leave.md") for c in now.values())
    kept = [i for i in ids if i in now]
    assert kept and all(np.array_equal(kb.token_vectors([i])[i], before[i]) for i in kept)
    assert all(np.array_equal(a, b) for a, b in zip(kb.token_codec.basis, codec.basis))  # fitted once


@pytest.mark.parametrize(("files", "options"), [
    pytest.param(CHINESE, {}, id="chinese-e5"),
    pytest.param(ENGLISH, {"late_interaction": "off"}, id="english-off"),
])
def test_other_knowledge_bases_store_no_token_vectors(tmp_path, files, options):
    settings = Settings(index_dir=tmp_path / "index", kb="kb", **options)
    assert run_ingest([_docs(tmp_path / "docs", files)], settings, progress=False).wrote
    assert store.peek_manifest(settings).late == {}
    retriever = open_retriever(settings)
    assert retriever.late is None and retriever.state.token_codec is None
    assert not (tmp_path / "index" / "kb" / "late").exists()


def test_a_first_write_fits_the_codec_on_its_first_states_and_encodes_the_rest_with_it(tmp_path, monkeypatch):
    import ingest.pipeline

    monkeypatch.setattr(ingest.pipeline, "FIT_TOKENS", 20)  # the first chunk's states already fill the sample
    settings = Settings(index_dir=tmp_path / "index", kb="en")
    assert run_ingest([_docs(tmp_path / "docs", ENGLISH)], settings, progress=False).wrote
    retriever = open_retriever(settings)
    kb, codec = retriever.state, retriever.state.token_codec
    chunks = kb.state.chunks
    assert len(chunks) == len(ENGLISH) == len(kb.state.late) and codec.dims < 128  # fitted on < 128 states
    states = retriever.late.documents([c.text for c in chunks])
    for chunk, s in zip(chunks, states):
        stored = codec.decode(kb.token_vectors([chunk.id])[chunk.id])
        # states beyond the fitted sample may pass its int8 range and are clipped: close, not exact
        assert stored.shape == (len(s), codec.dims) and (stored * codec.project(s)).sum(axis=1).min() > 0.95


def test_a_later_chunk_is_read_under_its_document_title(tmp_path):
    assert late_interaction.chunk_text("They run nightly.", "Backups") == "Backups\nThey run nightly."
    assert late_interaction.chunk_text("# Backups\n\nThey run nightly.", "Backups") == "# Backups\n\nThey run nightly."
    assert late_interaction.chunk_text("They run nightly.", "") == "They run nightly."
    body = " ".join(f"Step {i} copies snapshot {i} to a clean host and verifies its checksum." for i in range(120))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "Restore drill", "text": body}) + "\n")
    settings = Settings(index_dir=tmp_path / "index", kb="en")
    assert run_ingest([docs], settings, progress=False).wrote
    retriever = open_retriever(settings)
    chunks = retriever.state.state.chunks
    read = [late_interaction.chunk_text(c.text, "Restore drill") for c in chunks]
    assert len(chunks) > 1 and read[0] == chunks[0].text and all(r.startswith("Restore drill\n") for r in read[1:])
    for chunk, text in zip(chunks, read):
        assert len(retriever.state.token_vectors([chunk.id])[chunk.id]) == len(retriever.late.documents([text])[0])
