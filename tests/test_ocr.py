"""OCR: bundled models verified, reading order, every image format and scanned PDF pages end to end,
pages carried from the loader to chunks, citations, `rag.ask --json`, eval rows and the source view."""

import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from ingest import ocr
from ingest.chunk import ChunkConfig, chunk_document
from ingest.load import LoadError, SourceFile, load
from ingest.ocr import Line, reading_order
from rag.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures" / "ocr"
MAX_BYTES = 20 * 2**20


def _load(path: Path, *, ocr_on: bool = True):
    docs = load(SourceFile(path.absolute(), path.name), max_bytes=MAX_BYTES, ocr=ocr_on)
    assert len(docs) == 1
    return docs[0]


def _squash(text: str) -> str:
    return "".join(text.split()).lower()


def test_bundled_models_are_verified_against_their_pins(monkeypatch):
    paths = ocr.model_paths()
    assert set(paths) == {"det_model_path", "rec_model_path"} and all(Path(p).is_file() for p in paths.values())
    name, _ = ocr.MODELS["rec_model_path"]
    monkeypatch.setitem(ocr.MODELS, "rec_model_path", (name, "0" * 64))
    with pytest.raises(ocr.OCRUnavailable, match="ch_PP-OCRv4_rec_infer.onnx has sha256"):
        ocr.model_paths()


def _line(text: str, x0: float, y0: float, x1: float, height: float = 20) -> Line:
    return Line(text, 0.9, x0, y0, x1, y0 + height)


def test_reading_order_rows_wrapped_lines_and_paragraphs():
    lines = [  # given out of order: a two-column row, a wrapped paragraph, a short line, a list, a gap
        _line("second paragraph", 10, 200, 200),
        _line("right", 300, 10, 400), _line("left", 10, 12, 200),
        _line("大型语言模型是深度", 10, 40, 500), _line("学习的应用。", 10, 68, 300),
        _line("short line", 10, 96, 150), _line("- item one", 10, 124, 500),
    ]
    assert reading_order(lines) == "left  right\n大型语言模型是深度学习的应用。\nshort line\n- item one\n\nsecond paragraph"
    wrapped = [_line("Hybrid retrieval fuses", 10, 10, 500), _line("BM25 and dense scores", 10, 38, 300)]
    assert reading_order(wrapped) == "Hybrid retrieval fuses BM25 and dense scores"
    assert reading_order([]) == ""


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tiff"])
def test_each_image_format_is_read_by_ocr(tmp_path, suffix):
    path = tmp_path / f"faq{suffix}"
    Image.open(FIXTURES / "faq-en.png").convert("RGB").save(path)
    doc = _load(path)
    assert "8501" in doc.text and "incident" in doc.text.lower() and "15minutes" in _squash(doc.text)
    assert doc.meta["pages_ocr"] == 1 and doc.meta["ocr_s"] > 0 and doc.pages == ()


def test_transparent_screenshot_is_read_on_white(tmp_path):
    grey = Image.open(FIXTURES / "notes-zh.png").convert("L")
    rgba = Image.new("RGBA", grey.size, (0, 0, 0, 0))  # black text on a fully transparent background
    rgba.putalpha(Image.eval(grey, lambda v: 255 - v))
    rgba.save(tmp_path / "shot.png")
    assert "低秩分解矩阵" in _load(tmp_path / "shot.png").text


def test_multipage_tiff_frames_are_pages(tmp_path):
    frames = [Image.open(FIXTURES / name).convert("RGB") for name in ("notes-zh.png", "faq-en.png")]
    frames[0].save(tmp_path / "two.tiff", save_all=True, append_images=frames[1:])
    doc = _load(tmp_path / "two.tiff")
    assert doc.meta["pages"] == 2 and [n for n, _ in doc.pages] == [1, 2]
    second = doc.text[doc.pages[1][1]:]
    assert "8501" in second and "低秩" not in second and "低秩" in doc.text[:doc.pages[1][1]]


def test_pdf_pages_with_a_text_layer_skip_ocr_and_scanned_pages_are_ocrd(tmp_path):
    from pypdf import PdfReader, PdfWriter

    from tests.test_load import _minimal_pdf

    writer = PdfWriter()
    writer.append(PdfReader(io.BytesIO(_minimal_pdf("Reranking reorders the fused candidate list", "Mixed"))))
    writer.append(PdfReader(FIXTURES / "scanned.pdf"))
    writer.write(tmp_path / "mixed.pdf")
    doc = _load(tmp_path / "mixed.pdf")
    assert (doc.meta["pages"], doc.meta["pages_text"], doc.meta["pages_ocr"]) == (3, 1, 2)
    assert [n for n, _ in doc.pages] == [1, 2, 3]
    page = {n: doc.text[start:] for n, start in reversed(doc.pages)}
    assert page[1].startswith("Reranking reorders") and page[2].startswith("第一页") and page[3].startswith("第二页")
    off = _load(tmp_path / "mixed.pdf", ocr_on=False)  # OCR off: only the text layer
    assert off.meta["pages_text"] == 1 and "pages_ocr" not in off.meta and "第一页" not in off.text


def test_ocr_off_refuses_images_and_scanned_pdfs_with_the_reason():
    with pytest.raises(LoadError, match='OCR is off'):
        _load(FIXTURES / "notes-zh.png", ocr_on=False)
    with pytest.raises(LoadError, match=r"no extractable text \(scanned PDF\? OCR is off\)"):
        _load(FIXTURES / "scanned.pdf", ocr_on=False)


def test_chunks_know_the_pages_they_span():
    pages = ["第一页的句子。" * 30, "第二页的句子。" * 30, "第三页。"]
    text = "\n\n".join(pages)
    starts = ((1, 0), (2, len(pages[0]) + 2), (5, 2 * len(pages[0]) + 4))  # page numbers need not be consecutive
    chunks = chunk_document("d", "d.pdf", text, count_tokens=lambda xs: [len(x) for x in xs],
                            config=ChunkConfig(chunk_tokens=150, overlap_tokens=0, max_tokens=200), pages=starts)
    assert len(chunks) >= 3
    for c in chunks:
        first = max(n for n, s in starts if s <= c.start)
        last = max(n for n, s in starts if s < c.end)
        assert (c.page, c.page_end) == (first, last)
        assert all(c.page_at(x) == max(n for n, s in starts if s <= x) for x in range(c.start, c.end, 7))
    assert {p for c in chunks for p in (c.page, c.page_end)} == {1, 2, 5} and any(c.page != c.page_end for c in chunks)
    assert chunks[0].page_label == "p. 1"
    plain = chunk_document("d", "d.txt", text, count_tokens=lambda xs: [len(x) for x in xs])
    assert all(c.page is None and c.page_label == "" for c in plain)


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def ocr_kb(tmp_path_factory):
    """A knowledge base of the two images and the two-page scanned PDF, ingested for real."""
    from ingest.pipeline import run_ingest

    root = tmp_path_factory.mktemp("ocr-docs")
    for name in ("notes-zh.png", "faq-en.png", "scanned.pdf"):
        shutil.copy(FIXTURES / name, root / name)
    settings = Settings(index_dir=tmp_path_factory.mktemp("index"), kb="ocr", answer_mode="extractive")
    report = run_ingest([root], settings, progress=False)
    return root, settings, report


def test_ingest_reports_pages_by_text_layer_and_by_ocr(ocr_kb):
    root, _, report = ocr_kb
    assert report.wrote and not report.failed
    by_name = {Path(f.source).name: f for f in report.files}
    assert (by_name["scanned.pdf"].pages_text, by_name["scanned.pdf"].pages_ocr) == (0, 2)
    assert by_name["notes-zh.png"].pages_ocr == 1 and all(f.ocr_s > 0 for f in by_name.values())


def test_scanned_page_is_retrieved_and_cited_with_its_page(ocr_kb):
    from rag.ask import answer_json
    from rag.chain import answer
    from rag.chat_view import source_title
    from rag.eval.answers import answer_row
    from rag.eval.qa import QAItem, RelevanceJudge
    from rag.llm import LLMClient
    from rag.retrieve import open_retriever

    _, settings, _ = ocr_kb
    retriever = open_retriever(settings)
    dead = LLMClient("http://127.0.0.1:9/v1", timeout_s=5, retries=0)  # extractive: the LLM is never called
    ans = answer("混合检索把哪两种分数融合？", settings=settings, retriever=retriever, llm=dead)
    cited = [c for c in ans.citations if c.chunk.doc_id.endswith("scanned.pdf")]
    assert cited, ans.citations
    quotes = cited[0].quotes()  # each evidence sentence names its own page
    on_page_2 = [q for q in quotes if "BM25" in q["text"]]
    assert on_page_2 and all(q["page"] == 2 for q in on_page_2)
    assert all(q["page"] == 1 for q in quotes if "8501" in q["text"])
    pages = {q["page"] for q in quotes}
    assert (cited[0].page, cited[0].page_end) == (min(pages), max(pages))
    row = next(r for r in answer_json(ans)["citations"] if r["n"] == cited[0].n)
    assert (row["page"], row["page_end"]) == (min(pages), max(pages)) and row["evidence"] == quotes
    assert json.loads(json.dumps(answer_json(ans)))["hits"][0]["page"] in (1, 2, None)
    label = "p. 2" if pages == {2} else "pp. 1-2"
    assert source_title(cited[0].chunk, "en").endswith("· " + label)
    item = QAItem("q", ans.question, evidence=["BM25"])
    eval_row = answer_row(item, ans, RelevanceJudge({}))
    assert next(c for c in eval_row["citations"] if c["n"] == cited[0].n)["page"] == min(pages)


def test_image_text_is_retrievable(ocr_kb):
    from rag.retrieve import open_retriever

    _, settings, _ = ocr_kb
    hits = open_retriever(settings).search("LoRA 冻结预训练权重，训练低秩矩阵")
    assert hits[0].chunk.doc_id.endswith("notes-zh.png") and hits[0].chunk.page is None


def test_knowledge_base_written_before_pages_still_loads(ocr_kb):
    """chunks.jsonl rows without the page fields (older versions) load with no page."""
    from rag.retrieve import open_retriever

    _, settings, _ = ocr_kb
    folder = (Path(settings.index_dir) / settings.kb).resolve()
    lines = (folder / "chunks.jsonl").read_text(encoding="utf-8").splitlines()
    old = [{k: v for k, v in json.loads(line).items() if k not in ("page", "page_end")} for line in lines]
    (folder / "chunks.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in old), encoding="utf-8")
    hits = open_retriever(settings).search("混合检索把哪两种分数融合？")
    assert hits and all(h.chunk.page is None for h in hits)


def test_edit_distances_used_by_the_ocr_benchmark():
    from bench.ocr import cer, edit_distance, fuzzy_distance

    assert [edit_distance(a, b) for a, b in [("kitten", "sitting"), ("abc", ""), ("", "ab"), ("字符", "字符")]] == [3, 3, 2, 0]
    assert fuzzy_distance("abd", "xxabcxx") == 1 and fuzzy_distance("abc", "zzabczz") == 0
    assert cer("第一页 text", "第一页text") == 0.0 and cer("ab", "ax") == 0.5


@pytest.mark.parametrize("name", ["notes-zh.png", "faq-en.png", "scanned.pdf"])
def test_fixture_read_back_within_five_percent_cer(name):
    from bench.ocr import cer

    truth = (FIXTURES / name).with_suffix(".txt").read_text(encoding="utf-8")
    assert cer(truth, _load(FIXTURES / name).text) <= 0.05


@pytest.mark.parametrize("name", ["scan.pdf", "slide.png", "photo.JPG", "page.jpeg", "shot.webp", "fax.tif", "fax.tiff"])
def test_app_and_api_accept_scans_and_images_for_upload(name):
    from rag import ui

    assert ui.check_upload(name, 10, max_mb=1).lower() == name.lower()
