"""Offline OCR: the PP-OCRv4 ONNX models bundled in the `rapidocr-onnxruntime` wheel, read on the CPU.

The model files are located with `importlib.util.find_spec` and checked against pinned sha256 sums
before the first page is read. Recognised lines are put in reading order (rows by position, rows
into paragraphs by vertical gaps); lines below `MIN_SCORE` are dropped and counted.
"""

from __future__ import annotations

import re
import statistics
import threading
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from rag.models import pinned_package_file

PACKAGE = "rapidocr_onnxruntime"  # rapidocr-onnxruntime==1.4.4, installed by ./dev (pyproject.toml says why)
INSTALL_HINT = "./dev setup (pip install --no-deps rapidocr-onnxruntime==1.4.4)"
# The two models used (detection, recognition; no angle classifier), pinned to the 1.4.4 wheel.
MODELS = {
    "det_model_path": ("models/ch_PP-OCRv4_det_infer.onnx",
                       "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"),
    "rec_model_path": ("models/ch_PP-OCRv4_rec_infer.onnx",
                       "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b"),
}
MIN_SCORE = 0.5  # recognised lines scoring below this are dropped (counted in the ingest report)
MAX_PIXELS = 40_000_000  # larger images are refused before they are decoded
_PARAGRAPH_GAP = 0.8  # a vertical gap over this many line heights starts a new paragraph
_LIST_ITEM = re.compile(r"(?:[-*•·]\s*\S|\d{1,2}[.)、]\s*\D)")


class OCRUnavailable(RuntimeError):
    """The bundled OCR models are missing or are not the pinned files."""


@dataclass(frozen=True)
class Line:
    """One recognised text line and its box (pixels)."""

    text: str
    score: float
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def height(self) -> float:
        return self.y1 - self.y0


@dataclass(frozen=True)
class PageText:
    """The text OCR read from one image, in reading order."""

    text: str
    lines: int  # lines kept
    dropped: int  # lines dropped for a score below MIN_SCORE
    seconds: float


def model_paths() -> dict[str, str]:
    """The bundled model files, verified against their pinned sha256; raises OCRUnavailable."""
    paths = {}
    for key, (name, sha256) in MODELS.items():
        try:
            paths[key] = str(pinned_package_file(PACKAGE, name, sha256, INSTALL_HINT))
        except RuntimeError as e:  # not installed, missing, or another sha256
            raise OCRUnavailable(f"OCR model: {e}") from None
    return paths


@lru_cache(maxsize=1)
def _engine():
    """The RapidOCR engine on the verified model files: detection + recognition, no angle classifier, no
    score filter of its own (read_image drops and counts low-confidence lines). Detector input: "max"
    never enlarges an image (the package's default "min 736" blew a 620 x 168 screenshot up 4x and spent
    3.3 s instead of 0.05 s detecting); rapidocr 1.4.4 then picks 960 / 1500 / 2000 px by image size."""
    from rapidocr_onnxruntime import RapidOCR

    return RapidOCR(**model_paths(), use_cls=False, text_score=0.0, det_limit_type="max", print_verbose=False)


# One call at a time: the engine's detector keeps the current call's resize step on itself, so it is not
# safe to share between threads; onnxruntime already uses every core for one page.
_engine_lock = threading.Lock()


def read_image(rgb: np.ndarray) -> PageText:
    """OCR one RGB image (H x W x 3, uint8) into paragraphs of text."""
    with _engine_lock:
        t = time.perf_counter()
        result, _ = _engine()(rgb)
        seconds = time.perf_counter() - t
    lines = [_line(box, text, score) for box, text, score in result or []]
    kept = [ln for ln in lines if ln.score >= MIN_SCORE and ln.text.strip()]
    return PageText(reading_order(kept), len(kept), len(lines) - len(kept), seconds)


def _line(box, text: str, score: float) -> Line:
    xs, ys = [p[0] for p in box], [p[1] for p in box]
    return Line(text.strip(), float(score), min(xs), min(ys), max(xs), max(ys))


def reading_order(lines: list[Line]) -> str:
    """Lines to text: rows top to bottom (boxes left to right), rows to paragraphs by vertical gaps."""
    if not lines:
        return ""
    height = statistics.median(ln.height for ln in lines)
    right = max(ln.x1 for ln in lines)
    paragraphs: list[str] = []
    last_bottom, last_right = None, right
    for row in _rows(lines):
        text = "  ".join(ln.text for ln in sorted(row, key=lambda ln: ln.x0))
        top = min(ln.y0 for ln in row)
        if last_bottom is None or top - last_bottom > _PARAGRAPH_GAP * height:
            paragraphs.append(text)
        else:
            paragraphs[-1] += _line_break(paragraphs[-1], text, wrapped=last_right > right - 2 * height)
            paragraphs[-1] += text
        last_bottom, last_right = max(ln.y1 for ln in row), max(ln.x1 for ln in row)
    return "\n\n".join(paragraphs)


def _rows(lines: list[Line]) -> list[list[Line]]:
    """Group boxes whose vertical extents overlap by more than half the smaller height."""
    rows: list[list[Line]] = []
    for ln in sorted(lines, key=lambda ln: (ln.y0 + ln.y1) / 2):
        if rows:
            row = rows[-1]
            top, bottom = min(x.y0 for x in row), max(x.y1 for x in row)
            if min(bottom, ln.y1) - max(top, ln.y0) > 0.5 * min(ln.height, bottom - top):
                row.append(ln)
                continue
        rows.append([ln])
    return rows


def _line_break(before: str, after: str, *, wrapped: bool) -> str:
    """What joins two rows of one paragraph: a line that ran to the margin wraps (a space between Latin
    words, nothing between CJK characters); a short line or a list item keeps its line break."""
    if not wrapped or _LIST_ITEM.match(after):
        return "\n"
    latin = before[-1:].isascii() and before[-1:].isalnum() and after[:1].isascii() and after[:1].isalnum()
    return " " if latin or before[-1:] in ",.;:!?" else ""
