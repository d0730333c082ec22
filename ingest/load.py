"""Find source files and read each into `Document` records, keeping structure as light markdown.

Discovery, size limits, text decoding and BEIR jsonl live here; the HTML, DOCX, PDF and image
readers are in `ingest.formats` (OCR in `ingest.ocr`).
"""

from __future__ import annotations

import codecs
import errno
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from rag.records import Document

logger = logging.getLogger(__name__)

IMAGES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff"})  # read by OCR
SUPPORTED = frozenset({".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx"}) | IMAGES
BEIR_SUFFIX = ".jsonl"  # a BEIR corpus.jsonl: one {"_id", "title", "text"} object per line

_BOMS = (  # UTF-32 before UTF-16: the UTF-32-LE BOM starts with the UTF-16-LE one
    (codecs.BOM_UTF8, "utf-8-sig", "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le", "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be", "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "utf-16-be"),
)
# Multi-byte CJK encodings charset-normalizer may pick for short simplified-Chinese GBK text.
_OTHER_CJK = frozenset({"big5", "big5hkscs", "cp950", "euc_jp", "shift_jis", "cp932", "euc_kr", "cp949", "johab"})
_CONTROL_BYTES = bytes(b for b in range(32) if b not in (9, 10, 12, 13, 27))
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")
_MD_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


class LoadError(Exception):
    """A file that could not be found or loaded; str() is '<path>: <reason>'."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


@dataclass(frozen=True)
class SourceFile:
    """A file to load and its document id (BEIR jsonl files use the corpus' own `_id`s instead)."""

    path: Path  # absolute, symlinks not resolved
    doc_prefix: str  # e.g. "llm-notes-zh/000_x.txt" for a folder argument, "x.txt" for a file argument


# --------------------------------------------------------------------------- discovery


def discover(paths: list[Path]) -> tuple[list[SourceFile], list[LoadError]]:
    """Expand files and folders (recursively) into loadable files; problems are returned, never raised."""
    found: list[SourceFile] = []
    errors: list[LoadError] = []
    seen_real: set[str] = set()
    seen_ids: dict[str, Path] = {}
    for arg in paths:
        for source in _expand(Path(arg), errors):
            real = os.path.realpath(source.path)
            if real in seen_real:
                logger.debug("skipping %s: same file already found", source.path)
                continue
            if source.doc_prefix in seen_ids:
                errors.append(LoadError(source.path, f"duplicate document id {source.doc_prefix!r} "
                                                     f"(already used by {seen_ids[source.doc_prefix]})"))
                continue
            seen_real.add(real)
            seen_ids[source.doc_prefix] = source.path
            found.append(source)
    return found, errors


def _expand(arg: Path, errors: list[LoadError]) -> list[SourceFile]:
    """One command-line argument to source files (a file, or a folder walked recursively)."""
    arg = arg.absolute()
    if arg.is_dir():
        return _walk(arg, errors)
    if arg.is_file():
        return [SourceFile(arg, arg.name)] if _supported(arg, errors) else []
    errors.append(LoadError(arg, _not_a_file_reason(arg)))
    return []


def _walk(root: Path, errors: list[LoadError]) -> list[SourceFile]:
    """Walk a folder iteratively: skip hidden names, follow symlinks, report loops once."""
    prefix = root.resolve().name or root.name
    found: list[SourceFile] = []
    visited: set[str] = set()
    stack: list[tuple[Path, tuple[str, ...]]] = [(root, (os.path.realpath(root),))]
    while stack:
        folder, ancestors = stack.pop()
        if ancestors[-1] in visited:  # a second symlink to a folder already walked
            logger.debug("skipping %s: folder already walked", folder)
            continue
        visited.add(ancestors[-1])
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            errors.append(LoadError(folder, f"cannot list folder: {e.strerror or e}"))
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path, kind = Path(entry.path), _kind(entry)
            if kind == "dir":
                real = os.path.realpath(path)
                if real in ancestors:
                    errors.append(LoadError(path, f"symlink loop (points back to {real})"))
                else:
                    subfolders.append((path, (*ancestors, real)))
            elif kind == "file":
                if _supported(path, errors):
                    found.append(SourceFile(path, f"{prefix}/{path.relative_to(root).as_posix()}"))
            else:
                errors.append(LoadError(path, _not_a_file_reason(path)))
        stack.extend(reversed(subfolders))
    return found


def _kind(entry: os.DirEntry) -> str:
    """'dir' or 'file' (symlinks followed), else 'other' (broken or looping links, fifos, sockets)."""
    try:
        return "dir" if entry.is_dir() else "file" if entry.is_file() else "other"
    except OSError:  # e.g. ELOOP from a link to itself
        return "other"


def _supported(path: Path, errors: list[LoadError]) -> bool:
    """True for a loadable extension; otherwise record why not."""
    suffix = path.suffix.lower()
    if suffix in SUPPORTED or suffix == BEIR_SUFFIX:
        return True
    errors.append(LoadError(path, f"unsupported file type {suffix}" if suffix else
                            "unsupported file type (no extension)"))
    return False


def _not_a_file_reason(path: Path) -> str:
    """Why a path that is neither a folder nor a regular file cannot be read."""
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symlink loop"
        if path.is_symlink():
            return "broken symlink"
        return e.strerror.lower() if e.strerror else str(e)
    return "not a regular file"


# --------------------------------------------------------------------------- loading


def load(source: SourceFile, *, max_bytes: int, ocr: bool = True) -> list[Document]:
    """Read one file into documents (one per file; one per line for BEIR jsonl); raise LoadError on failure.

    `ocr`: read images, and PDF pages without a usable text layer, with the bundled OCR."""
    from ingest.formats import load_docx, load_html, load_image, load_pdf  # formats imports from here

    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
    path = source.path
    suffix = path.suffix.lower()
    try:
        data = _read_bytes(path, max_bytes)
        if suffix == BEIR_SUFFIX:
            return _load_beir(path, data)
        if suffix in (".html", ".htm"):
            text, title, meta = load_html(path, data)
        elif suffix == ".pdf":
            text, title, meta = load_pdf(path, data, ocr=ocr)
        elif suffix in IMAGES:
            text, title, meta = load_image(path, data, ocr=ocr)
        elif suffix == ".docx":
            text, title, meta = load_docx(path, data)
        else:
            text, title, meta = _load_plain(path, data)
    except LoadError:
        raise
    except Exception as e:  # the boundary: nothing else escapes, the cause is kept
        raise LoadError(path, f"cannot load: {short_cause(e)}") from e
    if not text.strip():
        raise LoadError(path, "no text content (whitespace only)")
    meta["bytes"] = len(data)
    pages = tuple((number, start) for number, start in meta.pop("page_starts", []))
    return [Document(id=source.doc_prefix, source=str(path), text=text, title=title or path.stem, meta=meta,
                     pages=pages)]


def join_pages(pages: list[tuple[int, str]]) -> tuple[str, list[list[int]]]:
    """Page texts joined by blank lines, with [page number, start offset] of each page in the result."""
    parts, starts, offset = [], [], 0
    for number, text in pages:
        starts.append([number, offset])
        parts.append(text)
        offset += len(text) + 2
    return "\n\n".join(parts), starts


def _read_bytes(path: Path, max_bytes: int) -> bytes:
    """The file's bytes, refusing empty and oversized files before reading them."""
    size = path.stat().st_size
    if size == 0:
        raise LoadError(path, "empty file")
    if size > max_bytes:
        raise LoadError(path, f"file too large ({_mb(size)} > limit {_mb(max_bytes)})")
    return path.read_bytes()


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def short_cause(e: BaseException) -> str:
    """A short one-line description of an exception."""
    message = str(e).strip().splitlines()[0] if str(e).strip() else ""
    message = message if len(message) <= 160 else message[:157] + "..."
    return f"{type(e).__name__}: {message}" if message else type(e).__name__


def _load_plain(path: Path, data: bytes) -> tuple[str, str, dict]:
    """.txt kept as is; .md/.markdown already are markdown (title = first heading)."""
    text, encoding = decode_text(data, path)
    is_md = path.suffix.lower() in (".md", ".markdown")
    heading = _MD_HEADING.search(text) if is_md else None
    title = heading.group(1).strip() if heading else ""
    return text, title, {"encoding": encoding, "format": "markdown" if is_md else "text"}


def _load_beir(path: Path, data: bytes) -> list[Document]:
    """A BEIR corpus.jsonl: one Document per line, id = `_id`, text = title + blank line + text."""
    try:
        lines = data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise LoadError(path, f"not UTF-8 JSON lines ({e.reason} at byte {e.start})") from e
    docs: list[Document] = []
    seen: set[str] = set()
    blank_docs = 0
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise LoadError(path, f"line {n}: invalid JSON ({e.msg})") from e
        if not isinstance(row, dict) or "_id" not in row or "text" not in row:
            raise LoadError(path, f"line {n}: not a BEIR corpus record (needs _id, title, text)")
        doc_id, title = str(row["_id"]), str(row.get("title") or "").strip()
        if doc_id in seen:
            raise LoadError(path, f"line {n}: duplicate _id {doc_id!r}")
        seen.add(doc_id)
        body = str(row["text"] or "")
        text = f"{title}\n\n{body}" if title else body
        if not text.strip():
            blank_docs += 1
            continue
        docs.append(Document(id=doc_id, source=str(path), text=text, title=title,
                             meta={"line": n, "format": "beir"}))
    if blank_docs:
        logger.warning("%s: %d records with neither title nor text left out", path, blank_docs)
    if not docs:
        raise LoadError(path, "no documents in the jsonl file")
    return docs


# --------------------------------------------------------------------------- encodings


def decode_text(data: bytes, path: Path) -> tuple[str, str]:
    """Decode a text-type file: BOM, UTF-16 NUL pattern, strict UTF-8, charset-normalizer, then replace."""
    for bom, name, codec in _BOMS:
        if data.startswith(bom):
            return _checked(data[len(bom):].decode(codec, errors="replace"), path), name
    utf16 = _utf16_by_nuls(data)
    if utf16:
        try:
            return _checked(data.decode(utf16), path), utf16
        except UnicodeDecodeError:
            pass
    if _looks_binary(data):
        raise LoadError(path, "binary content, not text")
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    encoding = _guess_encoding(data)
    if encoding:
        try:
            return _checked(data.decode(encoding), path), encoding
        except (UnicodeDecodeError, LookupError):
            pass
    logger.warning("%s: encoding not recognised, decoding as UTF-8 with replacement characters", path)
    return _checked(data.decode("utf-8", errors="replace"), path), "utf-8 (errors replaced)"


def _utf16_by_nuls(data: bytes) -> str | None:
    """'utf-16-le'/'utf-16-be' when NUL bytes sit on one parity (ASCII-heavy UTF-16 without a BOM)."""
    sample = data[:8192]
    sample = sample[: len(sample) - len(sample) % 2]
    half = len(sample) // 2
    if half < 2:
        return None
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    if odd >= 0.3 * half and even <= 0.02 * half:
        return "utf-16-le"
    if even >= 0.3 * half and odd <= 0.02 * half:
        return "utf-16-be"
    return None


def _looks_binary(data: bytes) -> bool:
    """Many NUL or other control bytes: not a text file."""
    sample = data[: 1 << 20]
    controls = len(sample) - len(sample.translate(None, _CONTROL_BYTES))
    return sample.count(0) > 0.005 * len(sample) or controls > 0.05 * len(sample)


def _checked(text: str, path: Path) -> str:
    """Reject decoded text that is mostly control characters (binary decoded by a permissive codec)."""
    sample = text[: 1 << 20]
    if sample and len(_CONTROL_CHARS.findall(sample)) > 0.05 * len(sample):
        raise LoadError(path, "binary content, not text")
    return text


def _guess_encoding(data: bytes) -> str | None:
    """charset-normalizer's guess, preferring GB18030 (a GBK superset) over other CJK codecs."""
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        return None
    if best.encoding in _OTHER_CJK:
        try:
            data.decode("gb18030")
            return "gb18030"
        except UnicodeDecodeError:
            pass
    return best.encoding
