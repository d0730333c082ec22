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
import tempfile
import time
import unicodedata
from pathlib import Path

import numpy as np

from bench.common import LLM_NOTES, REPO, SCIFACT, table

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


def _last_row(needle: str, hay: str, first: np.ndarray) -> np.ndarray:
    """The last row of the Levenshtein table of `needle` against `hay`, given its first row (numpy rows)."""
    hh = np.array([ord(c) for c in hay], dtype=np.int64)
    steps = np.arange(len(hay) + 1)
    prev = first
    for i, ch in enumerate(needle, 1):
        cur = np.empty_like(prev)
        cur[0] = i
        cur[1:] = np.minimum(prev[:-1] + (hh != ord(ch)), prev[1:] + 1)
        prev = np.minimum.accumulate(cur - steps) + steps  # insertions, left to right
    return prev


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance."""
    return int(_last_row(a, b, np.arange(len(b) + 1))[-1])


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate on folded text."""
    ref = fold(reference)
    return edit_distance(ref, fold(hypothesis)) / max(len(ref), 1)


def word_gaps(reference: str, hypothesis: str) -> float:
    """English: share of the reference's word breaks the OCR text keeps (PP-OCR often drops spaces)."""
    ref_words = len(reference.split())
    return min(len(hypothesis.split()), ref_words) / max(ref_words, 1)


def _pages(max_pages: int):
    """(language, page text) of up to `max_pages` full pages per language: the Chinese notes (with their
    English terms), and the English FAQ followed by SciFact abstracts."""
    sources = {"zh": [p.read_text(encoding="utf-8") for p in sorted(LLM_NOTES.glob("*.txt"))[:2]],
               "en": [(SAMPLE / "faq-en.md").read_text(encoding="utf-8"), _scifact_abstracts(12)]}
    font = _font(FONT_PX)
    per_page = (PAGE[1] - 2 * MARGIN) // LINE_PX
    for lang, texts in sources.items():
        lines = [ln for text in texts for ln in wrap(_plain(text), font, PAGE[0] - 2 * MARGIN) if ln.strip()]
        for k in range(0, min(len(lines), max_pages * per_page), per_page):
            yield lang, "\n".join(lines[k:k + per_page])


def cer_pages(max_pages: int) -> dict:
    """Render pages of both languages, OCR them, score them per language.

    Reference for the speed ratio: embedding the same page's text with the bundled e5 (every page pays it)."""
    from ingest.ocr import read_image
    from rag.embed import load_embedder
    from rag.settings import Settings

    embedder = load_embedder(Settings())
    embedder.encode_passages(["warm-up"], batch_size=32, progress=False)
    read_image(np.full((64, 64, 3), 255, np.uint8))  # load the models outside the timings
    stats: dict[str, dict[str, list]] = {}
    for lang, truth in _pages(max_pages):
        st = stats.setdefault(lang, {"s": [], "embed_s": [], "errors": [], "chars": [], "breaks": []})
        rgb = np.asarray(render_pages(truth)[0].convert("RGB"))
        t = time.perf_counter()
        read = read_image(rgb)
        st["s"].append(time.perf_counter() - t)
        t = time.perf_counter()
        embedder.encode_passages([truth], batch_size=32, progress=False)
        st["embed_s"].append(time.perf_counter() - t)
        ref = fold(truth)
        st["errors"].append(edit_distance(ref, fold(read.text)))
        st["chars"].append(len(ref))
        st["breaks"].append(word_gaps(truth, read.text))
    return {lang: {"pages": len(st["s"]), "chars": sum(st["chars"]), "cer": sum(st["errors"]) / max(sum(st["chars"]), 1),
                   "s_per_page": float(np.mean(st["s"])), "s_p95": float(np.percentile(st["s"], 95)),
                   "ocr_vs_embedding": float(np.sum(st["s"]) / np.sum(st["embed_s"])),
                   "word_breaks_kept": float(np.mean(st["breaks"]))} for lang, st in stats.items()}


def _scifact_abstracts(n: int) -> str:
    """The first `n` SciFact abstracts (English scientific prose), title line then text."""
    with SCIFACT.open(encoding="utf-8") as fh:
        rows = [json.loads(next(fh)) for _ in range(n)]
    return "\n\n".join(f"{r['title']}\n{r['text']}" for r in rows)


def _plain(text: str) -> str:
    """Source text as a reader sees it printed: inline HTML tags removed."""
    return re.sub(r"<[^<>]{1,200}>", "", text)


# --------------------------------------------------------------------------- retrieval

RETRIEVAL_NOTES = ("000_", "001_", "002_", "004_")  # the notes files read back (003 alone is ~150 pages)
FUZZY = 0.2  # an evidence string is found in a chunk at an edit distance of at most this share of its length


def fuzzy_distance(needle: str, hay: str) -> int:
    """The smallest edit distance between `needle` and any substring of `hay` (Sellers: a free start)."""
    return int(_last_row(needle, hay, np.zeros(len(hay) + 1, dtype=np.int64)).min())


class FuzzyJudge:
    """Relevance that tolerates OCR errors: a chunk holds an evidence string up to FUZZY edits per character.
    The same rule judges both knowledge bases, so the comparison is fair."""

    def relevant(self, item, chunk) -> bool:
        body = fold(chunk.text).lower()
        for evidence in item.evidence:
            needle = fold(evidence).lower()
            if needle and fuzzy_distance(needle, body) <= FUZZY * len(needle):
                return True
        return False


def retrieval_corpus(folder: Path) -> tuple[Path, Path, list]:
    """The original files and their scanned-PDF renderings in two folders, and the dev questions whose
    evidence lies in them."""
    from rag.eval.qa import load_qa

    text_dir, scan_dir = folder / "text", folder / "scanned"
    text_dir.mkdir(parents=True, exist_ok=True)
    scan_dir.mkdir(parents=True, exist_ok=True)
    sources = [p for p in sorted(LLM_NOTES.glob("*.txt")) if p.name.startswith(RETRIEVAL_NOTES)]
    sources += sorted(p for p in SAMPLE.iterdir() if p.is_file())
    folded = []
    for path in sources:
        text = path.read_text(encoding="utf-8")
        (text_dir / path.name).write_text(text, encoding="utf-8")
        save_scanned_pdf(render_pages(_plain(text)), scan_dir / (path.stem + ".pdf"))
        folded.append(fold(_plain(text)).lower())
    items = [q for qa in ("llm-notes-zh.dev.jsonl", "sample.jsonl") for q in load_qa(REPO / "data" / "qa" / qa)]
    judge = FuzzyJudge()
    chosen = [q for q in items if q.answerable and q.evidence
              and any(judge.relevant(q, _TextOnly(t)) for t in folded)]
    return text_dir, scan_dir, chosen


class _TextOnly:
    def __init__(self, text: str) -> None:
        self.text = text


def retrieval(folder: Path) -> dict:
    """hit@k over the scanned PDFs vs the same questions over the original text files (hybrid retrieval)."""
    from ingest.pipeline import run_ingest
    from rag.eval.qa import RelevanceJudge
    from rag.eval.retrieval import evaluate_mode
    from rag.retrieve import open_retriever
    from rag.settings import Settings

    text_dir, scan_dir, items = retrieval_corpus(folder)
    out = {"questions": len(items)}
    for name, docs in (("text", text_dir), ("scanned", scan_dir)):
        settings = Settings(index_dir=folder / "index", kb=f"ocr-bench-{name}")
        t = time.perf_counter()
        report = run_ingest([docs], settings, rebuild=True, progress=False)
        ingest_s = time.perf_counter() - t
        retriever = open_retriever(settings)
        fuzzy, _ = evaluate_mode(retriever, items, "hybrid", FuzzyJudge(), None, progress=False)
        texts = {d: r.text for d, r in retriever.state.documents.items()}
        exact, _ = evaluate_mode(retriever, items, "hybrid", RelevanceJudge(texts), None, progress=False)
        out[name] = {"fuzzy": fuzzy, "exact": exact, "ingest_s": ingest_s, "chunks": report.chunks_total,
                     "pages_ocr": sum(f.pages_ocr for f in report.files), "ocr_s": sum(f.ocr_s for f in report.files),
                     "failed": [(f.source, f.reason) for f in report.failed]}
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.ocr", description=__doc__.splitlines()[0],
                                     epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cer", help="character error rate and seconds per page")
    c.add_argument("--pages", type=int, default=6, help="pages per language")
    f = sub.add_parser("fixtures", help="write the test images and scanned PDF")
    f.add_argument("folder", type=Path)
    r = sub.add_parser("retrieval", help="hit@5 over scanned PDFs vs the original text files")
    r.add_argument("--work", type=Path, help="folder for the renderings and the two indexes (default: a temp folder)")
    args = parser.parse_args(argv)
    if args.cmd == "fixtures":
        make_fixtures(args.folder)
        return 0
    if args.cmd == "retrieval":
        with tempfile.TemporaryDirectory() as tmp:
            results = retrieval(args.work or Path(tmp))
        rows = [[name, judge, r[judge]["hit@1"], r[judge]["hit@5"], r[judge]["mrr@10"], r["chunks"], r["pages_ocr"], r["ocr_s"]]
                for name, r in results.items() if name != "questions" for judge in ("fuzzy", "exact")]
        print(f"{results['questions']} questions")
        print(table(["documents", "judge", "hit@1", "hit@5", "MRR@10", "chunks", "pages by OCR", "OCR s"], rows))
        print(json.dumps(results, indent=1, default=str))
        return 0
    results = cer_pages(args.pages)
    rows = [[lang, r["pages"], r["chars"], r["cer"], r["word_breaks_kept"], r["s_per_page"], r["s_p95"],
             r["ocr_vs_embedding"]] for lang, r in results.items()]
    print(table(["language", "pages", "characters", "CER", "word breaks kept", "s/page", "s/page p95",
                 "OCR time / embedding time"], rows))
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
