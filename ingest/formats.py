"""Per-format readers: HTML to light markdown, DOCX and PDF to text, each with its title and metadata.

Each `load_<format>(path, data)` returns ``(text, title, meta)`` and raises `LoadError` for a file
it cannot read; `ingest.load.load` picks the reader by extension.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from pathlib import Path

import numpy as np

from ingest.load import LoadError, decode_text, join_pages, short_cause

logger = logging.getLogger(__name__)

_LIST_ITEM = re.compile(r"(?:- |\d+\. )")


def load_html(path: Path, data: bytes) -> tuple[str, str, dict]:
    """HTML via BeautifulSoup(lxml): page furniture dropped, structure kept as markdown."""
    from bs4 import BeautifulSoup

    text, encoding = decode_text(data, path)
    soup = BeautifulSoup(text, "lxml")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    if not title and (h1 := soup.find("h1")):
        title = h1.get_text(" ", strip=True)
    return html_to_markdown(soup), title, {"encoding": encoding, "format": "html"}


_DROP = frozenset("script style nav footer header aside form noscript iframe template svg head button".split())
_PARAGRAPHS = frozenset("p blockquote ul ol dl figure hr table".split())
_LINES = frozenset("div section article main dt dd caption figcaption address details".split())


def html_to_markdown(soup) -> str:
    """Render parsed HTML as light markdown with an explicit stack (O(n), safe on very deep nesting)."""
    from bs4 import NavigableString, Tag

    out: list[str] = []
    pre = 0  # depth of <pre> elements around the current node
    stack: list = [soup.body or soup]
    while stack:
        node = stack.pop()
        if isinstance(node, tuple):  # leaving a tag: (text to write, change of <pre> depth)
            out.append(node[0])
            pre += node[1]
        elif isinstance(node, Tag) and node.name == "tr":
            out.append(_table_row(node))
        elif isinstance(node, Tag) and node.name not in _DROP:
            before, after = _markers(node, in_pre=pre > 0)
            is_pre = int(node.name == "pre")
            out.append(before)
            pre += is_pre
            stack.append((after, -is_pre))
            stack.extend(reversed(node.contents))
        elif type(node) is NavigableString:  # not comments, doctypes, CDATA
            out.append(str(node) if pre else re.sub(r"\s+", " ", node))
    return _tidy("".join(out))


def _markers(tag, *, in_pre: bool) -> tuple[str, str]:
    """The markdown written before and after one tag's content."""
    name = tag.name
    if name in ("h1", "h2", "h3", "h4", "h5", "h6"):
        return "\n\n" + "#" * int(name[1]) + " ", "\n\n"
    if name == "li":
        lists = tag.find_parents(["ul", "ol"], limit=8)
        numbered = bool(lists) and lists[0].name == "ol"
        marker = f"{len(tag.find_previous_siblings('li')) + 1}. " if numbered else "- "
        return "\n" + "  " * max(len(lists) - 1, 0) + marker, ""
    if name == "pre":
        return "\n\n```\n", "\n```\n\n"
    if name == "code" and not in_pre:
        return "`", "`"
    if name == "br":
        return "\n", ""
    if name in ("ul", "ol") and tag.parent is not None and tag.parent.name == "li":
        return "", "\n"  # a nested list continues its parent item
    if name in _PARAGRAPHS:
        return "\n\n", "\n\n"
    return ("\n", "\n") if name in _LINES else ("", "")


def _table_row(row) -> str:
    """One <tr> as a '| a | b |' line (plus a separator after a leading header row)."""
    cells = [" ".join(c.get_text(" ").split()) for c in row.find_all(["td", "th"], recursive=False)]
    header = row.find("th", recursive=False) is not None and row.find_previous_sibling("tr") is None
    return "| " + " | ".join(cells) + " |\n" + ("|" + " --- |" * len(cells) + "\n" if header else "")


def _tidy(text: str) -> str:
    """Strip lines (list indentation and code fences kept), join lone list markers, collapse blank runs."""
    lines, fenced = [], False
    for line in text.split("\n"):
        if line.strip().startswith("```"):
            while fenced and lines and not lines[-1]:  # no blank lines before a closing fence
                lines.pop()
            fenced, line = not fenced, line.strip()
        keep_indent = fenced or re.match(r"\s+(?:-|\d+\.)\s", line)
        lines.append(line.rstrip() if keep_indent else line.strip())
    text = re.sub(r"^([ \t]*(?:-|\d+\.))\n+[ \t]*(?=\S)", r"\1 ", "\n".join(lines), flags=re.MULTILINE)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def load_docx(path: Path, data: bytes) -> tuple[str, str, dict]:
    """DOCX via python-docx: Heading styles to '#', list styles to '- '/'1. ', tables to '|' rows."""
    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as e:
        raise LoadError(path, f"not a valid DOCX: {short_cause(e)}") from e
    blocks: list[str] = []
    title, number = document.core_properties.title or "", 0
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            blocks.append(_docx_table(block))
            continue
        text = block.text.strip()
        style = block.style.name if block.style is not None else ""
        heading = re.fullmatch(r"Heading (\d)|Title", style)
        number = number + 1 if text and "List Number" in style else 0
        if not text:
            continue
        if heading:
            title = title or text
            text = "#" * min(int(heading.group(1) or 1), 6) + " " + text
        elif number:
            text = f"{number}. {text}"
        elif "List" in style or block._p.pPr is not None and block._p.pPr.numPr is not None:
            text = f"- {text}"
        if blocks and _LIST_ITEM.match(text) and _LIST_ITEM.match(blocks[-1].rsplit("\n", 1)[-1]):
            blocks[-1] += "\n" + text  # consecutive list items stay on adjacent lines
        else:
            blocks.append(text)
    return "\n\n".join(blocks), title, {"format": "docx"}


def _docx_table(table) -> str:
    """A python-docx table as markdown '|' rows; a merged cell's text is written once, then blanks."""
    rows = []
    for row in table.rows:
        cells, last = [], None
        for cell in row.cells:
            cells.append("" if cell._tc is last else " ".join(cell.text.split()))
            last = cell._tc
        rows.append("| " + " | ".join(cells) + " |")
        if len(rows) == 1:
            rows.append("|" + " --- |" * len(cells))
    return "\n".join(rows)


# A PDF page's text layer is used when it holds this many non-space characters, few of them U+FFFD
# or private-use glyph codes (fonts without a Unicode map); other pages are read by OCR.
MIN_PAGE_CHARS = 20
MAX_BAD_SHARE = 0.1
OCR_DPI = 150  # PDF pages are rendered at this resolution for OCR ...
OCR_MAX_SIDE = 2000  # ... with the longer side at most this many pixels


def load_pdf(path: Path, data: bytes, *, ocr: bool) -> tuple[str, str, dict]:
    """PDF via pypdf, page by page; a page without a usable text layer is rendered and OCR'd (when `ocr`)."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise LoadError(path, "encrypted PDF (a password is required)")
        pages = list(reader.pages)
    except LoadError:
        raise
    except Exception as e:
        raise LoadError(path, f"not a valid PDF: {short_cause(e)}") from e
    texts: list[tuple[int, str]] = []
    scanned: list[int] = []
    for number, page in enumerate(pages, 1):
        try:
            text = (page.extract_text() or "").strip()
        except Exception as e:  # one broken page should not lose the others
            logger.warning("%s: page %d: no text extracted: %s", path, number, short_cause(e))
            text = ""
        if usable_text_layer(text):
            texts.append((number, text))
        else:
            scanned.append(number)
    meta = {"format": "pdf", "pages": len(pages), "pages_text": len(texts)}
    if scanned and ocr:
        meta |= _ocr_pdf_pages(path, data, scanned, texts)
    text, starts = join_pages(sorted(texts))
    if not text:
        why = "no text layer and OCR found no text" if ocr else "no extractable text (scanned PDF? OCR is off)"
        raise LoadError(path, why)
    title = str(reader.metadata.title or "") if reader.metadata else ""
    return text, title.strip(), meta | {"page_starts": starts}


def usable_text_layer(text: str) -> bool:
    """Enough characters, and few replacement or private-use ones (glyphs without a Unicode map)."""
    chars = [c for c in text if not c.isspace()]
    bad = sum(c == "\ufffd" or "\ue000" <= c <= "\uf8ff" for c in chars)
    return len(chars) >= MIN_PAGE_CHARS and bad <= MAX_BAD_SHARE * len(chars)


def _ocr_pdf_pages(path: Path, data: bytes, numbers: list[int], texts: list[tuple[int, str]]) -> dict:
    """Render the pages `numbers` with pdfium and OCR them, adding what they hold to `texts`."""
    import pypdfium2

    from ingest.ocr import read_image

    try:
        pdf = pypdfium2.PdfDocument(data)
    except Exception as e:
        raise LoadError(path, f"PDF pages cannot be rendered for OCR: {short_cause(e)}") from e
    stats = {"pages_ocr": 0, "ocr_s": 0.0, "ocr_dropped_lines": 0}
    try:
        for number in numbers:
            page = pdf[number - 1]
            width, height = page.get_size()  # points
            scale = min(OCR_DPI / 72, OCR_MAX_SIDE / max(width, height, 1))
            rgb = np.asarray(page.render(scale=scale).to_pil().convert("RGB"))
            read = read_image(rgb)
            logger.info("%s: page %d read by OCR in %.1f s (%d lines)", path, number, read.seconds, read.lines)
            stats["pages_ocr"] += 1
            stats["ocr_s"] += read.seconds
            stats["ocr_dropped_lines"] += read.dropped
            if read.text.strip():
                texts.append((number, read.text))
    finally:
        pdf.close()
    stats["ocr_s"] = round(stats["ocr_s"], 3)
    return stats


def load_image(path: Path, data: bytes, *, ocr: bool) -> tuple[str, str, dict]:
    """PNG / JPEG / WebP / TIFF read by OCR; each frame of a multi-page TIFF is a page."""
    from PIL import Image, ImageSequence

    from ingest.ocr import MAX_PIXELS, read_image

    if not ocr:
        raise LoadError(path, 'an image is read by OCR, and OCR is off (ocr = "off")')
    try:
        with warnings.catch_warnings():  # the size is checked below, with a limit of our own
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError as e:
        raise LoadError(path, f"image too large to decode safely: {short_cause(e)}") from e
    except Exception as e:
        raise LoadError(path, f"not a valid image: {short_cause(e)}") from e
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise LoadError(path, f"image too large ({width}x{height} = {width * height / 1e6:.0f} MP > limit "
                              f"{MAX_PIXELS / 1e6:.0f} MP)")
    texts: list[tuple[int, str]] = []
    stats = {"format": "image", "pages": 0, "pages_text": 0, "pages_ocr": 0, "ocr_s": 0.0, "ocr_dropped_lines": 0}
    try:
        for number, frame in enumerate(ImageSequence.Iterator(image), 1):
            read = read_image(np.asarray(_on_white(frame)))
            stats["pages"] = stats["pages_ocr"] = number
            stats["ocr_s"] += read.seconds
            stats["ocr_dropped_lines"] += read.dropped
            if read.text.strip():
                texts.append((number, read.text))
    except LoadError:
        raise
    except Exception as e:
        raise LoadError(path, f"not a valid image: {short_cause(e)}") from e
    text, starts = join_pages(texts)
    if not text:
        raise LoadError(path, f"OCR found no text in the image ({stats['ocr_dropped_lines']} low-confidence lines dropped)")
    stats["ocr_s"] = round(stats["ocr_s"], 3)
    return text, "", stats | {"page_starts": starts if stats["pages"] > 1 else []}


def _on_white(frame):
    """An RGB copy of one image frame, transparency flattened onto white (screenshots often have alpha)."""
    from PIL import Image

    rgba = frame.convert("RGBA")
    flat = Image.new("RGB", rgba.size, "white")
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat
