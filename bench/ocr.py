"""OCR quality and speed: text rendered to page images with a Debian CJK font, read back by `ingest.ocr`.

    python -m bench.ocr cer                     # CER (Chinese, English) and seconds per page
    python -m bench.ocr retrieval               # hit@5: questions over scanned PDFs vs the original text files
    python -m bench.ocr fixtures tests/fixtures/ocr   # (re)make the small test images and scanned PDF

Pages are rendered at 150 DPI on A4 (1240 x 1754 px, 24 px text), like a clean office scan.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np

from bench.common import LLM_NOTES, REPO, table

FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")  # Debian fonts-wqy-microhei
PAGE = (1240, 1754)  # A4 at 150 DPI
MARGIN = 100
FONT_PX = 24
LINE_PX = 38
SAMPLE = REPO / "data" / "sample"


# --------------------------------------------------------------------------- rendering


def _font(size: int):
    from PIL import ImageFont

    if not FONT.is_file():
        sys.exit(f"error: {FONT} missing (apt-get install fonts-wqy-microhei)")
    return ImageFont.truetype(str(FONT), size)


def wrap(text: str, font, width: int) -> list[str]:
    """Source lines wrapped to `width` pixels (by character: works for CJK and, less prettily, for Latin)."""
    out = []
    for para in text.splitlines():
        line = ""
        for ch in para.replace("\t", "    "):
            if font.getlength(line + ch) > width:
                cut = line.rfind(" ") if re.search(r"[A-Za-z0-9]$", line) and ch != " " else -1
                out.append(line[:cut] if cut > 0 else line)
                line = line[cut + 1:] if cut > 0 else ""
            line += ch
        out.append(line)
    return out


def render_pages(text: str, *, page=PAGE, font_px=FONT_PX, line_px=LINE_PX, margin=MARGIN) -> list:
    """PIL page images of `text` (greyscale, white background), as many as it needs."""
    from PIL import Image, ImageDraw

    font = _font(font_px)
    lines = wrap(text, font, page[0] - 2 * margin)
    per_page = (page[1] - 2 * margin) // line_px
    pages = []
    for k in range(0, max(len(lines), 1), per_page):
        image = Image.new("L", page, 255)
        draw = ImageDraw.Draw(image)
        for i, line in enumerate(lines[k:k + per_page]):
            draw.text((margin, margin + i * line_px), line, font=font, fill=0)
        pages.append(image)
    return pages


def save_scanned_pdf(pages: list, path: Path, dpi: int = 150) -> None:
    """An image-only PDF (no text layer), one page per image."""
    pages[0].save(path, save_all=True, append_images=pages[1:], resolution=dpi)


# --------------------------------------------------------------------------- fixtures

FIXTURE_TEXTS = {
    # (file, text): a few lines each, small images so the tests stay fast
    "notes-zh.png": "LoRA 的核心思想是冻结预训练权重，\n只训练低秩分解矩阵 A 和 B。\n秩 r 通常取 8 或 16，显存占用大幅下降。",
    "faq-en.png": "Incident response times\nA P0 incident gets a response within 15 minutes.\nThe web UI listens on port 8501 by default.",
    "scanned.pdf": ("第一页：部署手册\n默认端口是 8501，最少需要 8 GB 内存。",
                    "第二页：检索原理\n混合检索把 BM25 和向量检索的分数融合。"),
}


def make_fixtures(folder: Path) -> None:
    """The committed test inputs: two small images and a two-page image-only PDF, plus their texts."""
    folder.mkdir(parents=True, exist_ok=True)
    small = {"page": (720, 200), "font_px": 24, "line_px": 40, "margin": 30}
    for name, text in FIXTURE_TEXTS.items():
        texts = text if isinstance(text, tuple) else (text,)
        pages = [render_pages(t, **small)[0] for t in texts]
        if name.endswith(".pdf"):
            save_scanned_pdf(pages, folder / name, dpi=100)
        else:
            pages[0].save(folder / name, optimize=True)
        (folder / name).with_suffix(".txt").write_text("\n\n".join(texts) + "\n", encoding="utf-8")
        print(f"wrote {folder / name} ({(folder / name).stat().st_size:,} bytes)")


# --------------------------------------------------------------------------- CER


def fold(text: str) -> str:
    """NFKC, no whitespace: the form CER is computed on (spaces are scored apart, see `word_gaps`)."""
    return "".join(unicodedata.normalize("NFKC", text).split())


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (row by row, numpy)."""
    if not a or not b:
        return max(len(a), len(b))
    prev = np.arange(len(b) + 1)
    bb = np.array([ord(c) for c in b])
    for i, ca in enumerate(a, 1):
        cur = np.empty_like(prev)
        cur[0] = i
        sub = prev[:-1] + (bb != ord(ca))
        cur[1:] = np.minimum(sub, prev[1:] + 1)
        cur = np.minimum.accumulate(cur - np.arange(len(cur))) + np.arange(len(cur))  # insertions
        prev = cur
    return int(prev[-1])


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate on folded text."""
    ref = fold(reference)
    return edit_distance(ref, fold(hypothesis)) / max(len(ref), 1)


def word_gaps(reference: str, hypothesis: str) -> float:
    """English: share of the reference's word breaks the OCR text keeps (PP-OCR often drops spaces)."""
    ref_words = len(reference.split())
    return min(len(hypothesis.split()), ref_words) / max(ref_words, 1)


def _cjk_share(text: str) -> float:
    chars = [c for c in text if not c.isspace()]
    return sum("\u4e00" <= c <= "\u9fff" for c in chars) / max(len(chars), 1)


def cer_pages(max_pages: int) -> dict:
    """Render pages of the Chinese notes and of the English FAQ, OCR them, score them per language."""
    from ingest.ocr import read_image

    sources = {"zh": [p.read_text(encoding="utf-8") for p in sorted(LLM_NOTES.glob("*.txt"))[:2]],
               "en": [(SAMPLE / "faq-en.md").read_text(encoding="utf-8")]}
    read_image(np.full((64, 64, 3), 255, np.uint8))  # load the models outside the timings
    out = {}
    for lang, texts in sources.items():
        errors = chars = 0
        seconds, gaps = [], []
        font = _font(FONT_PX)
        for text in texts:
            lines = [ln for ln in wrap(_plain(text), font, PAGE[0] - 2 * MARGIN) if ln.strip()]
            per_page = (PAGE[1] - 2 * MARGIN) // LINE_PX
            for k in range(0, len(lines), per_page):
                if len(seconds) >= max_pages:
                    break
                truth = "\n".join(lines[k:k + per_page])
                image = render_pages(truth)[0]
                t = time.perf_counter()
                read = read_image(np.asarray(image.convert("RGB")))
                seconds.append(time.perf_counter() - t)
                ref = fold(truth)
                errors += edit_distance(ref, fold(read.text))
                chars += len(ref)
                gaps.append(word_gaps(truth, read.text))
        out[lang] = {"pages": len(seconds), "chars": chars, "cer": errors / max(chars, 1),
                     "s_per_page": float(np.mean(seconds)), "s_p95": float(np.percentile(seconds, 95)),
                     "word_breaks_kept": float(np.mean(gaps)), "cjk_share": _cjk_share("".join(texts))}
    return out


def _plain(text: str) -> str:
    """Source text as a reader sees it printed: inline HTML tags removed."""
    return re.sub(r"<[^<>]{1,200}>", "", text)


# --------------------------------------------------------------------------- retrieval


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.ocr", description=__doc__.splitlines()[0],
                                     epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cer", help="character error rate and seconds per page")
    c.add_argument("--pages", type=int, default=6, help="pages per language")
    f = sub.add_parser("fixtures", help="write the test images and scanned PDF")
    f.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    if args.cmd == "fixtures":
        make_fixtures(args.folder)
        return 0
    results = cer_pages(args.pages)
    rows = [[lang, r["pages"], r["chars"], r["cer"], r["word_breaks_kept"], r["s_per_page"], r["s_p95"]]
            for lang, r in results.items()]
    print(table(["language", "pages", "characters", "CER", "English word breaks kept", "s/page", "s/page p95"], rows))
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
