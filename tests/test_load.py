"""discover() + load() on a corpus of real bad and good files built in tmp_path."""

from __future__ import annotations

import io
import json
import os
import random
import time
from pathlib import Path

import pytest

from ingest.load import LoadError, SourceFile, discover, load

MAX_BYTES = 20 * 2**20
_RNG = random.Random(1234)


def _minimal_pdf(text: str, title: str) -> bytes:
    """A one-page PDF with a Helvetica text object and an /Info title, xref offsets computed."""
    stream = f"BT /F1 24 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        f"<< /Title ({title}) >>".encode(),
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 6 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def _blank_pdf() -> bytes:
    """A valid PDF whose only page has no text layer (what a scan without OCR looks like)."""
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=612, height=792)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def _docx() -> bytes:
    """A real .docx: heading, paragraph, bullet item and a 2x2 table."""
    import docx

    document = docx.Document()
    document.core_properties.title = "Quarterly Report"
    document.add_heading("Sales overview", level=1)
    document.add_paragraph("Revenue grew in every region this quarter.")
    document.add_paragraph("bullet item one", style="List Bullet")
    table = document.add_table(rows=2, cols=2)
    for r, row in enumerate([("Region", "Sales"), ("North", "42")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    buf = io.BytesIO()
    document.save(buf)
    return buf.getvalue()


BEIR_ROWS = [
    {"_id": "d1", "title": "BM25", "text": "BM25 ranks documents by term frequency."},
    {"_id": "d2", "title": "", "text": "Dense retrieval embeds queries and passages."},
    {"_id": "d3", "title": "RRF", "text": "Reciprocal rank fusion merges ranked lists."},
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with one file per edge case (names are the case ids)."""
    root = tmp_path_factory.mktemp("inputs") / "corpus"
    (root / "sub").mkdir(parents=True)
    files: dict[str, bytes] = {
        "corrupt.pdf": _RNG.randbytes(4096),
        "good.pdf": _minimal_pdf("Hello PDF world", "Tiny PDF"),
        "scanned.pdf": _blank_pdf(),
        "report.docx": _docx(),
        "corrupt.docx": _RNG.randbytes(4096),
        "empty.txt": b"",
        "binary.txt": bytes(_RNG.randrange(256) for _ in range(4096)) + b"\x00" * 512,
        "gbk.txt": "大语言模型微调的注意点:输入包括问题、提示词和结束符号。".encode("gbk"),
        "utf16.txt": "UTF-16 text: 注意力机制\n".encode("utf-16"),  # with BOM
        "utf16le-nobom.txt": "plain ASCII heavy UTF-16 line\nsecond line\n".encode("utf-16-le"),
        "bom.md": "\ufeff# 标题 Title\n\n正文 body text.\n".encode(),
        "deep.html": ("<html><head><title>Deep page</title></head><body>" + "<div>" * 5000
                      + "<p>deep text</p>" + "</div>" * 5000 + "</body></html>").encode(),
        "my notes 笔记.txt": b"spaces and CJK in the name\n",
        "data.xyz": b"whatever",
        "corpus.jsonl": "\n".join(json.dumps(row) for row in BEIR_ROWS).encode(),
        "sub/inner.md": b"# Inner\n\nnested file\n",
        ".hidden.txt": b"never loaded",
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    with open(root / "big.txt", "wb") as f:  # 50 MiB of real text
        f.write((b"x" * 1023 + b"\n") * (50 * 1024))
    (root / ".git").mkdir()
    (root / ".git" / "config.txt").write_bytes(b"hidden folder")
    os.symlink("..", root / "sub" / "loop")  # a folder symlink pointing to its own parent
    return root


@pytest.fixture(scope="module")
def outcome(corpus: Path) -> tuple[dict[str, object], list[LoadError]]:
    """discover() + load() for every file: name -> list[Document] or LoadError."""
    found, errors = discover([corpus])
    results: dict[str, object] = {}
    for source in found:
        try:
            results[source.path.name] = load(source, max_bytes=MAX_BYTES)
        except LoadError as e:
            results[source.path.name] = e
    return results, errors


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        pytest.param("corrupt.pdf", "not a valid PDF", id="corrupt-pdf"),
        pytest.param("scanned.pdf", "no text layer and OCR found no text", id="pdf-without-text"),
        pytest.param("corrupt.docx", "not a valid DOCX", id="corrupt-docx"),
        pytest.param("empty.txt", "empty file", id="zero-bytes"),
        pytest.param("binary.txt", "binary content, not text", id="binary-named-txt"),
        pytest.param("big.txt", "file too large (50.0 MB > limit 20.0 MB)", id="too-large"),
    ],
)
def test_bad_file_is_a_load_error(outcome, corpus: Path, name: str, reason: str) -> None:
    error = outcome[0][name]
    assert isinstance(error, LoadError)
    assert str(error).startswith(str(corpus / name) + ": ")
    assert reason in str(error) and reason in error.reason


@pytest.mark.parametrize(
    ("name", "doc_id", "contains", "title"),
    [
        pytest.param("good.pdf", "corpus/good.pdf", ["Hello PDF world"], "Tiny PDF", id="pdf"),
        pytest.param("report.docx", "corpus/report.docx",
                     ["# Sales overview", "Revenue grew", "- bullet item one", "| Region | Sales |", "| North | 42 |"],
                     "Quarterly Report", id="docx"),
        pytest.param("gbk.txt", "corpus/gbk.txt", ["大语言模型微调的注意点"], "gbk", id="gbk"),
        pytest.param("utf16.txt", "corpus/utf16.txt", ["UTF-16 text: 注意力机制"], "utf16", id="utf16-bom"),
        pytest.param("utf16le-nobom.txt", "corpus/utf16le-nobom.txt", ["plain ASCII heavy UTF-16 line"],
                     "utf16le-nobom", id="utf16-no-bom"),
        pytest.param("bom.md", "corpus/bom.md", ["# 标题 Title", "正文 body text."], "标题 Title", id="utf8-bom-md"),
        pytest.param("deep.html", "corpus/deep.html", ["deep text"], "Deep page", id="html-5000-levels"),
        pytest.param("my notes 笔记.txt", "corpus/my notes 笔记.txt", ["spaces and CJK"], "my notes 笔记",
                     id="space-and-cjk-name"),
        pytest.param("inner.md", "corpus/sub/inner.md", ["nested file"], "Inner", id="subfolder"),
    ],
)
def test_good_file_loads(outcome, corpus: Path, name: str, doc_id: str, contains: list[str], title: str) -> None:
    docs = outcome[0][name]
    assert isinstance(docs, list) and len(docs) == 1, docs
    doc = docs[0]
    assert doc.id == doc_id and doc.title == title
    assert Path(doc.source).is_absolute() and Path(doc.source).name == name
    for fragment in contains:
        assert fragment in doc.text
    assert "\ufeff" not in doc.text


def test_encodings_are_recorded(outcome) -> None:
    results = outcome[0]
    assert results["gbk.txt"][0].meta["encoding"] in ("gb18030", "gbk", "gb2312")
    assert results["utf16.txt"][0].meta["encoding"] == "utf-16-le"
    assert results["utf16le-nobom.txt"][0].meta["encoding"] == "utf-16-le"
    assert results["bom.md"][0].meta["encoding"] == "utf-8-sig"
    assert results["inner.md"][0].meta["encoding"] == "utf-8"


def test_discovery_reports_unsupported_and_loop_once(outcome, corpus: Path) -> None:
    results, errors = outcome
    messages = [str(e) for e in errors]
    assert messages.count(f"{corpus / 'data.xyz'}: unsupported file type .xyz") == 1
    loops = [m for m in messages if "symlink loop" in m]
    assert len(loops) == 1 and loops[0].startswith(str(corpus / "sub" / "loop"))
    assert len(errors) == 2, messages
    assert ".hidden.txt" not in results and "config.txt" not in results
    assert "data.xyz" not in results


def test_beir_jsonl_one_document_per_line(outcome, corpus: Path) -> None:
    docs = outcome[0]["corpus.jsonl"]
    assert [d.id for d in docs] == ["d1", "d2", "d3"]
    assert docs[0].text == "BM25\n\nBM25 ranks documents by term frequency." and docs[0].title == "BM25"
    assert docs[1].text == "Dense retrieval embeds queries and passages."  # empty title: text only
    assert [d.meta["line"] for d in docs] == [1, 2, 3]
    assert {d.source for d in docs} == {str(corpus / "corpus.jsonl")}


def test_single_file_argument_uses_the_file_name(corpus: Path) -> None:
    found, errors = discover([corpus / "sub" / "inner.md", corpus / "sub" / "inner.md"])
    assert errors == [] and found == [SourceFile(corpus / "sub" / "inner.md", "inner.md")]


def test_missing_path_is_reported(tmp_path: Path) -> None:
    found, errors = discover([tmp_path / "nope"])
    assert found == [] and [e.reason for e in errors] == ["no such file or directory"]


def test_deep_html_is_fast(corpus: Path) -> None:
    start = time.perf_counter()
    load(SourceFile(corpus / "deep.html", "deep.html"), max_bytes=MAX_BYTES)
    assert time.perf_counter() - start < 2.0


def test_html_structure(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text(
        "<html><head><title>T</title><script>var x;</script></head><body><nav>menu</nav>"
        "<h2>Setup</h2><p>Run <code>make</code>.</p><ul><li>a</li><li>b<ul><li>c</li></ul></li></ul>"
        "<ol><li>one</li><li>two</li></ol><pre>x = 1\n  y = 2\n</pre>"
        "<table><tr><th>k</th><th>v</th></tr><tr><td>a</td><td>1</td></tr></table><footer>(c) me</footer>"
        "</body></html>", encoding="utf-8")
    text = load(SourceFile(page, "page.html"), max_bytes=MAX_BYTES)[0].text
    assert text == ("## Setup\n\nRun `make`.\n\n- a\n- b\n  - c\n\n1. one\n2. two\n\n```\nx = 1\n  y = 2\n```\n\n"
                    "| k | v |\n| --- | --- |\n| a | 1 |")


def test_other_exceptions_are_wrapped(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "1", "text": "ok"}\nnot json\n', encoding="utf-8")
    with pytest.raises(LoadError, match=r"bad\.jsonl: line 2: invalid JSON"):
        load(SourceFile(bad, "bad.jsonl"), max_bytes=MAX_BYTES)
    gone = SourceFile(tmp_path / "gone.txt", "gone.txt")
    with pytest.raises(LoadError, match=r"gone\.txt: cannot load: FileNotFoundError"):
        load(gone, max_bytes=MAX_BYTES)
