"""Bad inputs for the OCR loaders: each is reported with its reason, and nothing else is lost."""

import io
import random
import shutil
from pathlib import Path

import pytest
from PIL import Image

from ingest.load import LoadError, SourceFile, load
from rag.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures" / "ocr"
_RNG = random.Random(15)
MAX_MB = 1.0


def _corrupt(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _RNG.randbytes(3000))


def _truncated(path: Path) -> None:
    path.write_bytes((FIXTURES / "notes-zh.png").read_bytes()[:2000])


def _huge(path: Path) -> None:
    Image.new("1", (10_000, 10_000), 1).save(path)  # 1-bit: small to write; refused before it is decoded


def _blank(path: Path) -> None:
    image = Image.new("L", (640, 360), 255)
    image.paste(Image.new("L", (200, 120), 90), (220, 120))  # a grey box: something to see, no text
    image.save(path)


def _scanned_500_pages(path: Path) -> None:
    noise = Image.frombytes("L", (64, 64), _RNG.randbytes(64 * 64))
    noise.save(path, save_all=True, append_images=[noise] * 499, resolution=72)
    assert path.stat().st_size > MAX_MB * 2**20


BAD = {
    "corrupt.png": (_corrupt, "not a valid image"),
    "truncated.png": (_truncated, "not a valid image"),
    "huge.png": (_huge, "image too large (10000x10000 = 100 MP > limit 40 MP)"),
    "blank.jpg": (_blank, "OCR found no text in the image"),
    "scan-500.pdf": (_scanned_500_pages, "file too large"),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad-ocr")
    for name, (make, _) in BAD.items():
        make(root / name)
    shutil.copy(FIXTURES / "faq-en.png", root / "good.png")
    return root


@pytest.mark.parametrize("name", list(BAD))
def test_bad_image_or_scan_is_a_load_error_with_its_reason(folder, name):
    with pytest.raises(LoadError) as info:
        load(SourceFile(folder / name, name), max_bytes=int(MAX_MB * 2**20))
    assert BAD[name][1] in info.value.reason and str(info.value).startswith(str(folder / name))


def test_bad_inputs_are_reported_and_the_good_image_is_indexed(folder, tmp_path):
    from ingest.__main__ import print_summary
    from ingest.pipeline import run_ingest
    from rag.retrieve import open_retriever

    settings = Settings(index_dir=tmp_path / "index", kb="bad-ocr", max_file_mb=MAX_MB)
    report = run_ingest([folder], settings, progress=False)
    failed = {Path(f.source).name: f.reason for f in report.failed}
    assert set(failed) == set(BAD)
    for name, (_, reason) in BAD.items():
        assert reason in failed[name]
    assert report.wrote and report.count("added") == 1
    hits = open_retriever(settings).search("P0 incident response time")
    assert hits and hits[0].chunk.doc_id.endswith("good.png")
    out = io.StringIO()
    print_summary(report, 1.0, out=out)
    summary = out.getvalue()
    assert "FAILED" in summary and "huge.png: image too large" in summary and "1 by OCR" in summary
