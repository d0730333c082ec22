"""Ingest: diff the files against the manifest, then load, clean, chunk, embed and index what changed.

Nothing heavy (embedder, jieba, the old index) is loaded when no file changed, so a no-change
re-run costs a directory walk and a hash per file.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ingest.chunk import ChunkConfig, chunk_document
from ingest.clean import clean_pages, is_toc_like
from ingest.load import LoadError, SourceFile, discover, load
from rag import embedder_choice, store
from rag.records import Chunk
from rag.settings import Settings
from rag.text import script_counts

logger = logging.getLogger(__name__)

TOC_PENALTY = 0.5  # fused-score factor for table-of-contents / link-list chunks
SHORT_CHARS = 40  # chunks with less text than this are mostly stray titles
SHORT_PENALTY = 0.5
SCRIPT_SAMPLE_CHARS = 200  # the corpus language counts the scripts of each chunk's first characters


@dataclass
class FileResult:
    """What happened to one file."""

    source: str
    status: str  # added | updated | unchanged | deleted | failed
    reason: str = ""
    chunks: int = 0
    removed_share: float = 0.0
    pages_text: int = 0  # paged formats: pages read from the text layer
    pages_ocr: int = 0  # pages (or images) read by OCR
    ocr_s: float = 0.0  # seconds spent in OCR
    ocr_dropped_lines: int = 0  # recognised lines dropped for low confidence


@dataclass
class IngestReport:
    """The summary printed at the end of a run."""

    kb: str
    files: list[FileResult] = field(default_factory=list)
    chunks_total: int = 0
    chunks_embedded: int = 0
    embedder: str = ""  # the knowledge base's embedder (what "auto" chose for a new one)
    stage_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    wrote: bool = False

    def count(self, status: str) -> int:
        """Number of files with this status."""
        return sum(f.status == status for f in self.files)

    @property
    def failed(self) -> list[FileResult]:
        """Files that could not be indexed, with their reasons."""
        return [f for f in self.files if f.status == "failed"]


def file_sha256(path: Path) -> str:
    """Content hash of a file on disk."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def text_sha256(text: str) -> str:
    """Content hash of a cleaned document."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def new_manifest(settings: Settings, embedder) -> store.Manifest:
    """The manifest of a fresh knowledge base."""
    import faiss
    import jieba

    from rag import late_interaction
    from rag.text import TOKENIZER_VERSION

    late = late_interaction.record(settings.late_dims) if late_interaction.stores_tokens(settings, embedder.name) else {}
    return store.Manifest(
        kb=settings.kb,
        embedder=store.EmbedderInfo(embedder.name, embedder.dim, embedder.fingerprint, embedder.query_prefix,
                                    embedder.passage_prefix),
        chunking=store.Chunking(settings.chunk_tokens, settings.chunk_overlap),
        tokenizer=TOKENIZER_VERSION,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        backend=settings.store,
        packages={"faiss": faiss.__version__, "jieba": jieba.__version__, "numpy": np.__version__},
        late=late,
    )


def chunk_prior(text: str) -> float:
    """Fused-score factor of a chunk: tables of contents, link lists and stray titles count less."""
    factor = 1.0
    if is_toc_like(text):
        factor *= TOC_PENALTY
    if len(text.strip()) < SHORT_CHARS:
        factor *= SHORT_PENALTY
    return factor


def _under(source: str, roots: list[Path]) -> bool:
    path = Path(source)
    return any(path == r or r in path.parents for r in roots)


@dataclass
class _Plan:
    """Files to (re)load and sources to drop, decided from hashes alone."""

    todo: list[tuple[SourceFile, str]]  # (file, sha256)
    drop: set[str]  # sources whose documents leave the index
    errors: list[LoadError]


def plan(paths: list[Path], manifest_files: dict, deletes: list[Path], report: IngestReport) -> _Plan:
    """Compare files on disk with the manifest's per-file hashes."""
    found, errors = discover(paths) if paths else ([], [])
    roots = [p.resolve() for p in paths if p.is_dir()]
    seen, todo = set(), []
    for sf in found:
        source = str(sf.path.resolve())
        seen.add(source)
        try:
            sha = file_sha256(sf.path)
        except OSError as e:
            errors.append(LoadError(sf.path, f"cannot read: {e}"))
            continue
        if manifest_files.get(source, {}).get("sha256") == sha:
            report.files.append(FileResult(source, "unchanged", chunks=manifest_files[source].get("chunks", 0)))
        else:
            todo.append((sf, sha))
    vanished = {s for s in manifest_files if s not in seen and _under(s, roots)}
    delete_roots = [p.resolve() for p in deletes]
    explicit = {s for s in manifest_files if _under(s, delete_roots)}
    return _Plan(todo, vanished | explicit, errors)


def run_ingest(
    paths: list[Path],
    settings: Settings,
    *,
    rebuild: bool = False,
    deletes: list[Path] = (),
    progress: bool = True,
) -> IngestReport:
    """Bring knowledge base `settings.kb` in line with `paths`; returns the report."""
    kb, index_dir = settings.kb, Path(settings.index_dir)
    report = IngestReport(kb)
    t0 = time.perf_counter()
    lock = store.kb_lock(index_dir, kb)
    try:
        manifest = None if rebuild else store.peek_manifest(settings)
        if embedder_choice.chooses_anew(settings, manifest):
            manifest = None  # "auto" over a knowledge base without chunks: its first documents choose the embedder
        settings = embedder_choice.for_manifest(settings, manifest)  # "auto": the knowledge base's own embedder
        if manifest is not None:
            store.check_compatible(manifest, settings, writing=True)
        files_state = dict(manifest.files) if manifest else {}
        work = plan(list(paths), files_state, list(deletes), report)
        for err in work.errors:
            report.files.append(FileResult(str(err.path), "failed", reason=err.reason))
        report.stage_s["scan"] += time.perf_counter() - t0
        from rag.text import TOKENIZER_VERSION

        stale_terms = manifest is not None and manifest.tokenizer != TOKENIZER_VERSION
        if not work.todo and not work.drop and manifest is not None and not stale_terms:
            report.chunks_total, report.embedder = manifest.counts.get("chunks", 0), manifest.embedder.id
            return report
        _apply(work, manifest, files_state, settings, report, progress)
    finally:
        lock.release()
    return report


def _apply(work: _Plan, manifest, files_state: dict, settings: Settings, report: IngestReport, progress: bool) -> None:
    """Load/clean/chunk/embed the changed files and write a new index version."""
    from rag.embed import load_embedder
    from rag.text import tokenize

    read = [r for sf, sha in tqdm(work.todo, desc="load", unit="file", disable=not progress)
            if (r := _read_file(sf, sha, settings, report)) is not None]
    if manifest is None:  # a new knowledge base: "auto" chooses the embedder from the cleaned texts
        settings = embedder_choice.for_texts(settings, (text for r in read for _, text, _ in r.docs))
    t = time.perf_counter()
    embedder = load_embedder(settings)
    report.stage_s["model_load"] += time.perf_counter() - t
    report.embedder = embedder.name
    if manifest is None:
        kb = store.open_store(settings, create=new_manifest(settings, embedder))
    else:
        kb = store.open_store(settings)
        store.check_compatible(kb.manifest, settings, embedder, writing=True)

    docs, chunks = [], []
    config = ChunkConfig(chunk_tokens=settings.chunk_tokens, overlap_tokens=settings.chunk_overlap)
    for r in tqdm(read, desc="chunk", unit="file", disable=not progress):
        file_docs, file_chunks, entry = _chunk_file(r, config, embedder.count_tokens, report)
        status = "updated" if entry["source"] in files_state else "added"
        files_state[entry["source"]] = entry
        docs += file_docs
        chunks += file_chunks
        report.files.append(FileResult(entry["source"], status, chunks=len(file_chunks), removed_share=entry["removed_share"],
                                       **_page_counts(file_docs)))

    t = time.perf_counter()
    vectors = _embed(chunks, kb, embedder, settings, report, progress)
    report.stage_s["embed"] += time.perf_counter() - t
    t = time.perf_counter()
    titles = {d.id: d.title for d in docs}
    tokens, codec = _token_codes(chunks, titles, kb, settings, progress) if kb.manifest.late else (None, None)
    report.stage_s["late_tokens"] += time.perf_counter() - t
    t = time.perf_counter()
    batch = store.Batch(docs, chunks, vectors, [tokenize(c.text) for c in chunks], [chunk_prior(c.text) for c in chunks],
                        tokens, codec)
    report.stage_s["bm25_tokenize"] += time.perf_counter() - t

    dropped_docs = {d for s in work.drop for d in files_state.get(s, {}).get("doc_ids", [])}
    for source in work.drop:
        files_state.pop(source, None)
        report.files.append(FileResult(source, "deleted"))
    if not docs and not work.drop and not len(kb):
        return  # nothing could be indexed: leave any previous index untouched
    t = time.perf_counter()
    kb.apply(batch, dropped_docs, replace(kb.manifest, files=files_state))
    report.stage_s["write"] += time.perf_counter() - t
    report.chunks_total = len(kb)
    report.wrote = True


@dataclass
class _Read:
    """One file loaded and cleaned, not chunked yet."""

    source: str
    sha: str
    docs: list[tuple]  # (loaded Document, cleaned text, its pages)
    original_chars: int
    removed_chars: int


def _read_file(sf, sha, settings, report) -> _Read | None:
    """Load and clean one file; failures become report lines, never exceptions."""
    source = str(sf.path.resolve())
    t = time.perf_counter()
    try:
        loaded = load(sf, max_bytes=int(settings.max_file_mb * 1024 * 1024), ocr=settings.ocr != "off")
    except LoadError as e:
        report.files.append(FileResult(source, "failed", reason=e.reason))
        return None
    report.stage_s["load"] += time.perf_counter() - t
    read = _Read(source, sha, [], 0, 0)
    for doc in loaded:
        t = time.perf_counter()
        cleaned, pages = clean_pages(doc.text, doc.pages)
        report.stage_s["clean"] += time.perf_counter() - t
        read.original_chars += cleaned.original_chars
        read.removed_chars += cleaned.removed_chars
        if cleaned.text.strip():
            read.docs.append((doc, cleaned.text, pages))
    if not read.docs:
        report.files.append(FileResult(source, "failed", reason="no text left after cleaning"))
        return None
    return read


def _chunk_file(read: _Read, config, count_tokens, report):
    """The documents, chunks and manifest entry of one loaded file."""
    docs, chunks, script = [], [], [0, 0]
    for doc, text, pages in read.docs:
        t = time.perf_counter()
        doc_chunks = chunk_document(doc.id, read.source, text, count_tokens=count_tokens, config=config, pages=pages)
        report.stage_s["chunk"] += time.perf_counter() - t
        docs.append(store.DocRecord(doc.id, read.source, doc.title, text, text_sha256(text), dict(doc.meta)))
        chunks += doc_chunks
        for chunk in doc_chunks:
            counts = script_counts(chunk.text[:SCRIPT_SAMPLE_CHARS])
            script = [script[0] + counts[0], script[1] + counts[1]]
    entry = {
        "source": read.source,
        "sha256": read.sha,
        "doc_ids": [d.id for d in docs],
        "chunks": len(chunks),
        "removed_share": round(read.removed_chars / read.original_chars, 4) if read.original_chars else 0.0,
        "script": script,
    }
    return docs, chunks, entry


def _page_counts(docs) -> dict:
    """The loader's page and OCR figures of one file, for its report line."""
    keys = ("pages_text", "pages_ocr", "ocr_s", "ocr_dropped_lines")
    return {k: sum(d.meta.get(k, 0) for d in docs) for k in keys}


def _embed(chunks: list[Chunk], kb: store.Store, embedder, settings, report, progress) -> np.ndarray:
    """Vectors for `chunks`, reusing the stored vector of any chunk id already indexed."""
    out = np.zeros((len(chunks), embedder.dim), np.float32)
    stored = kb.vectors([c.id for c in chunks])
    missing = []
    for i, chunk in enumerate(chunks):
        if chunk.id in stored:
            out[i] = stored[chunk.id]
        else:
            missing.append(i)
    if missing:
        vecs = embedder.encode_passages(
            [chunks[i].text for i in missing], batch_size=settings.embed_batch_size, progress=progress
        )
        out[missing] = vecs
    report.chunks_embedded += len(missing)
    return out


FIT_TOKENS = 100_000  # token states a new knowledge base's codec is fitted on (its first chunks' tokens)


def _token_codes(chunks: list[Chunk], titles: dict[str, str], kb: store.Store, settings,
                 progress) -> tuple[list[np.ndarray], object]:
    """Each chunk's int8 token codes (reusing stored ones by chunk id; a chunk is read under its document's title,
    `titles`), and the codec when this write fits it: a knowledge base's first write fits a PCA
    (rag.late_interaction.TokenCodec) on its first FIT_TOKENS states."""
    from rag.late_interaction import chunk_text, load_encoder

    codec = kb.token_codec
    if codec is None and len(kb):
        raise store.KBCorrupt(f"knowledge base {settings.kb!r} records token vectors but has none; rebuild it "
                              f"with `python -m ingest PATH --kb {settings.kb} --rebuild`")
    codes = kb.token_vectors([c.id for c in chunks]) if codec is not None else {}
    missing = [i for i, c in enumerate(chunks) if c.id not in codes]
    fitted, pending, waiting = None, [], 0  # pending: (row, states) waiting for the codec; waiting: their tokens
    encoder = load_encoder(settings, kb.manifest.late) if missing else None
    for start in tqdm(range(0, len(missing), 64), desc="token vectors", unit="batch", disable=not progress):
        part = missing[start : start + 64]
        texts = [chunk_text(chunks[i].text, titles.get(chunks[i].doc_id, "")) for i in part]
        for i, states in zip(part, encoder.documents(texts)):
            if codec is not None:
                codes[chunks[i].id] = codec.encode(states)
                continue
            pending.append((i, states))
            waiting += len(states)
            if waiting >= FIT_TOKENS:
                codec = fitted = _fit_codec(pending, kb.manifest.late["dims"], codes, chunks)
                pending = []
    if pending:  # a first write with fewer than FIT_TOKENS token states
        fitted = _fit_codec(pending, kb.manifest.late["dims"], codes, chunks)
    return [codes[c.id] for c in chunks], fitted


def _fit_codec(pending: list, dims: int, codes: dict, chunks: list[Chunk]):
    """Fit the codec on the pending chunks' states and store their codes into `codes`."""
    from rag.late_interaction import TokenCodec

    codec = TokenCodec.fit(np.concatenate([s for _, s in pending]), dims)
    codes.update((chunks[j].id, codec.encode(s)) for j, s in pending)
    return codec


def create_kb(settings: Settings) -> None:
    """Write an empty knowledge base `settings.kb` (documents are added later); refuses an existing one."""
    from rag.embed import load_embedder

    lock = store.kb_lock(Path(settings.index_dir), settings.kb)
    try:
        if store.peek_manifest(settings) is not None:
            raise store.KBExists(f"knowledge base {settings.kb!r} already exists")
        embedder = load_embedder(settings)
        kb = store.open_store(settings, create=new_manifest(settings, embedder))
        kb.apply(store.Batch(vectors=np.zeros((0, embedder.dim), dtype=np.float32)), set(), kb.manifest)
    finally:
        lock.release()
