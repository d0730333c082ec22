"""`embedder = "auto"`: a new knowledge base gets its embedder from its corpus language, and keeps it."""

from pathlib import Path

import pytest

from ingest.pipeline import create_kb, run_ingest
from rag import embedder_choice, store
from rag.check import check_answer
from rag.embed import support_embedder
from rag.prompt import Source
from rag.records import Chunk
from rag.retrieve import open_retriever
from rag.settings import BUNDLED_EMBEDDER, BUNDLED_EN_EMBEDDER, Settings
from tests.conftest import SAMPLE, SHARED
from tests.test_milvus_ingest import FILES as CHINESE
from tests.test_milvus_ingest import _write

ENGLISH = {
    "backups.md": "# Backups\n\nNightly backups of the database run at 02:00 UTC. Each backup is kept for "
                  "thirty days in cold storage, then deleted.\n",
    "leave.md": "# Paid leave\n\nEvery employee gets twenty-five days of paid leave per calendar year; unused "
                "days expire at the end of March.\n",
    "oncall.md": "# On-call\n\nThe on-call engineer acknowledges a P0 incident within fifteen minutes and posts "
                 "updates in the incident channel every half hour.\n",
}


def _docs(folder: Path, files: dict[str, str]) -> Path:
    """`folder`, with `files` written into it."""
    _write(folder, files)
    return folder


def _recorded(settings: Settings) -> str:
    return store.peek_manifest(settings).embedder.id


@pytest.mark.parametrize(("cjk", "latin", "expected"), [
    pytest.param(0, 1000, BUNDLED_EN_EMBEDDER, id="english"),
    pytest.param(50, 950, BUNDLED_EN_EMBEDDER, id="at-the-threshold"),
    pytest.param(51, 949, BUNDLED_EMBEDDER, id="just-below"),
    pytest.param(400, 600, BUNDLED_EMBEDDER, id="mixed"),
    pytest.param(1000, 0, BUNDLED_EMBEDDER, id="chinese"),
    pytest.param(0, 0, BUNDLED_EMBEDDER, id="no-letters"),
])
def test_the_rule_english_needs_latin_letters_at_the_threshold(cjk, latin, expected):
    assert embedder_choice.ENGLISH_LATIN_SHARE == 0.95
    assert embedder_choice.embedder_for_counts(cjk, latin) == expected


def test_long_texts_are_counted_on_a_sample_scaled_back():
    text = ("English words " * 20_000) + "中文" * 5_000  # 240k Latin letters, 10k CJK characters: sampled
    cjk, latin = embedder_choice.corpus_counts([text])
    assert abs(cjk - 10_000) < 500 and abs(latin - 240_000) < 5_000


def test_shipped_corpora_resolve_to_e5():
    from ingest.clean import clean
    from ingest.load import discover, load

    def texts(root: Path) -> list[str]:
        found, _ = discover([root])
        return [clean(doc.text).text for sf in found for doc in load(sf, max_bytes=20 << 20, ocr=False)]

    assert embedder_choice.embedder_for_counts(*embedder_choice.corpus_counts(texts(SAMPLE))) == BUNDLED_EMBEDDER
    notes = SHARED / "corpus" / "llm-notes-zh"
    if notes.is_dir():
        assert embedder_choice.embedder_for_counts(*embedder_choice.corpus_counts(texts(notes))) == BUNDLED_EMBEDDER
    # the sample's English FAQ alone (a few Chinese words in it) is English
    assert embedder_choice.embedder_for_counts(*embedder_choice.corpus_counts(texts(SAMPLE / "faq-en.md"))) \
        == BUNDLED_EN_EMBEDDER


@pytest.mark.parametrize("backend", ["files", "milvus"])
def test_english_corpus_gets_bge_and_answers(tmp_path, backend):
    settings = Settings(index_dir=tmp_path / "index", kb="en", store=backend, milvus_uri=str(tmp_path / "kb.db"))
    assert settings.embedder == "auto"
    report = run_ingest([_docs(tmp_path / "docs", ENGLISH)], settings, progress=False)
    assert report.wrote and not report.failed and report.embedder == BUNDLED_EN_EMBEDDER
    built = store.peek_manifest(settings).embedder
    assert built.id == BUNDLED_EN_EMBEDDER and built.query_prefix.startswith("Represent this sentence")
    retriever = open_retriever(settings)
    assert retriever.embedder.name == BUNDLED_EN_EMBEDDER and retriever.settings.embedder == BUNDLED_EN_EMBEDDER
    # ColBERT token vectors (late interaction): the files store keeps them, the milvus store does not
    assert bool(store.peek_manifest(settings).late) == (retriever.late is not None) == (backend == "files")
    for mode in ("dense", "hybrid"):
        assert retriever.search("How long is a backup retained?", mode=mode, k=1)[0].chunk.doc_id.endswith("backups.md")
    assert retriever.search("vacation days per year", mode="dense", k=1)[0].chunk.doc_id.endswith("leave.md")
    # bge knowledge bases search dense twice (Rocchio toward the first hits' stored vectors)
    off = retriever.with_settings(retriever.settings.model_copy(update={"dense_feedback": "off"}))
    assert retriever.dense_feedback and not off.dense_feedback
    moved, plain = (r.dense_ranking("How long is a backup retained?", 3) for r in (retriever, off))
    assert moved[0][0] == plain[0][0] and moved[0][1] != pytest.approx(plain[0][1], abs=1e-4)


@pytest.mark.parametrize(("files", "expected"), [
    pytest.param(CHINESE, BUNDLED_EMBEDDER, id="chinese"),
    pytest.param({**ENGLISH, "lora.md": CHINESE["lora.md"]}, BUNDLED_EMBEDDER, id="mixed"),
])
def test_chinese_and_mixed_corpora_get_e5(tmp_path, files, expected):
    settings = Settings(index_dir=tmp_path / "index", kb="zh")
    assert run_ingest([_docs(tmp_path / "docs", files)], settings, progress=False).wrote
    assert _recorded(settings) == expected
    assert open_retriever(settings).embedder.name == expected
    retriever = open_retriever(settings)
    assert support_embedder(retriever.settings) is retriever.embedder  # e5 checks with itself
    assert not open_retriever(settings).dense_feedback  # e5: off (CMRC2018 measured worse)


def test_an_explicit_embedder_overrides_auto(tmp_path):
    settings = Settings(index_dir=tmp_path / "index", kb="en", embedder=BUNDLED_EMBEDDER)
    run_ingest([_docs(tmp_path / "docs", ENGLISH)], settings, progress=False)
    assert _recorded(settings) == BUNDLED_EMBEDDER
    assert open_retriever(Settings(index_dir=tmp_path / "index", kb="en")).embedder.name == BUNDLED_EMBEDDER
    with pytest.raises(store.IndexMismatch, match="embedder"):  # a named embedder must still match
        open_retriever(Settings(index_dir=tmp_path / "index", kb="en", embedder=BUNDLED_EN_EMBEDDER))


def test_incremental_ingest_keeps_the_recorded_embedder(tmp_path):
    docs = _docs(tmp_path / "docs", CHINESE)
    settings = Settings(index_dir=tmp_path / "index", kb="kb")
    first = run_ingest([docs], settings, progress=False)
    added = {**ENGLISH, "handbook.md": "\n\n".join(ENGLISH.values()) * 8}
    _write(docs, added)
    texts = [path.read_text(encoding="utf-8") for path in docs.iterdir()]
    assert embedder_choice.embedder_for_counts(*embedder_choice.corpus_counts(texts)) == BUNDLED_EN_EMBEDDER
    again = run_ingest([docs], settings, progress=False)  # the corpus is English now, the knowledge base is not
    assert (again.count("added"), again.count("unchanged")) == (len(added), len(CHINESE))
    assert again.chunks_embedded == again.chunks_total - first.chunks_total
    assert _recorded(settings) == again.embedder == BUNDLED_EMBEDDER
    assert "kept for thirty days" in open_retriever(settings).search("backup retention", mode="dense", k=1)[0].chunk.text


def test_an_empty_knowledge_base_takes_the_embedder_of_its_first_documents(tmp_path):
    settings = Settings(index_dir=tmp_path / "index", kb="empty")
    create_kb(settings)
    assert _recorded(settings) == BUNDLED_EMBEDDER  # nothing to go by yet
    run_ingest([_docs(tmp_path / "docs", ENGLISH)], settings, progress=False)
    assert _recorded(settings) == BUNDLED_EN_EMBEDDER


def test_prefixes_are_chosen_with_the_embedder():
    with pytest.raises(ValueError, match="query_prefix '' needs a named embedder"):
        Settings(query_prefix="")
    assert Settings(embedder=BUNDLED_EMBEDDER, query_prefix="").query_prefix == ""


def test_api_serves_each_knowledge_base_with_its_own_embedder(tmp_path):
    import httpx

    from rag.api.app import create_app
    from tests.live_api import LiveServer, wait_job

    settings = Settings(index_dir=tmp_path / "index")
    run_ingest([_docs(tmp_path / "zh", CHINESE)], settings.model_copy(update={"kb": "zh"}), progress=False)
    app = create_app(settings)
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=300) as http:
        assert http.post("/v1/kbs", json={"name": "en"}).status_code == 201
        files = [("files", (name, text.encode(), "text/markdown")) for name, text in ENGLISH.items()]
        assert wait_job(http, http.post("/v1/kbs/en/documents", files=files).json()["job"])["status"] == "done"
        kbs = {kb["name"]: kb for kb in http.get("/v1/kbs").json()["data"]}
        assert (kbs["en"]["embedder"], kbs["zh"]["embedder"]) == (BUNDLED_EN_EMBEDDER, BUNDLED_EMBEDDER)
        for kb, query, doc in [("en", "How long is a backup retained?", "backups.md"), ("zh", "低秩分解", "lora.md")]:
            hits = http.post("/v1/retrieve", json={"kb": kb, "query": query, "k": 1, "mode": "dense"}).json()["hits"]
            assert hits[0]["doc_id"].endswith(doc)
        opened = {kb: app.state.resources.open(settings.model_copy(update={"kb": kb})).retriever for kb in ("en", "zh")}
    assert opened["en"].embedder.name == BUNDLED_EN_EMBEDDER and opened["zh"].embedder.name == BUNDLED_EMBEDDER
    assert opened["en"].embedder is open_retriever(settings.model_copy(update={"kb": "en"})).embedder  # loaded once


def test_answers_over_english_sources_are_checked_with_the_multilingual_embedder(tmp_path):
    settings = Settings(index_dir=tmp_path / "index", kb="en")
    assert run_ingest([_docs(tmp_path / "docs", ENGLISH)], settings, progress=False).wrote
    retriever = open_retriever(settings)
    checker = support_embedder(retriever.settings)
    assert retriever.embedder.name == BUNDLED_EN_EMBEDDER and checker.name == BUNDLED_EMBEDDER
    text = ENGLISH["backups.md"].split("\n\n", 1)[1].strip()
    source = Source(1, (Chunk(id="c1", doc_id="backups.md", text=text, source="/d/backups.md", start=0, end=len(text)),),
                    "backups.md", "", text, 1)
    said = "每个备份在冷存储中保留三十天，然后删除。"  # what the source says, in Chinese, without a marker
    assert check_answer(said, [source], checker.encode_queries).text == said + "[1]"
    assert check_answer(said, [source], retriever.embedder.encode_queries).refusal == "unsupported"  # bge reads no Chinese
    assert check_answer("每个备份保留九十天。", [source], checker.encode_queries).refusal == "unsupported"
