"""Pure helpers for the Streamlit page (`app.py`): labels, upload names, provenance, highlighting.

Nothing here touches Streamlit, so every function is testable on its own.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from ingest.load import SUPPORTED
from rag.cite import lexical_support, marker_numbers, split_sentences
from rag.records import Hit
from rag.text import sentence_spans

UPLOAD_TYPES = tuple(sorted(suffix.lstrip(".") for suffix in SUPPORTED))  # what ingest reads, images (OCR) included
MAX_NAME_CHARS = 100  # uploaded file names are cut to this many characters (extension kept)
HIGHLIGHT_THRESHOLD = 0.5  # share of an answer sentence's tokens a source sentence must hold (as rag.cite)
NEAR_BEST = 0.1  # ... and at most this far below the best-scoring source sentence

LABELS: dict[str, dict[str, str]] = {
    "title": {"zh": "知识库问答", "en": "Document QA"},
    "language": {"zh": "界面语言", "en": "Language"},
    "kb": {"zh": "知识库", "en": "Knowledge base"},
    "new_kb": {"zh": "新建知识库（名称）", "en": "New knowledge base (name)"},
    "create_kb": {"zh": "创建", "en": "Create"},
    "kb_created": {"zh": "已创建，上传文档后即可提问。", "en": "Created; upload documents to start asking."},
    "kb_empty": {"zh": "该知识库还没有文档：请在下方上传。", "en": "No documents yet: upload some below."},
    "documents": {"zh": "文档", "en": "Documents"},
    "chunks": {"zh": "片段", "en": "Chunks"},
    "embedder": {"zh": "向量模型", "en": "Embedder"},
    "updated": {"zh": "最后更新", "en": "Last update"},
    "retrieval": {"zh": "检索设置", "en": "Retrieval"},
    "mode": {"zh": "检索方式", "en": "Mode"},
    "top_k": {"zh": "送入提示的片段数 (top-k)", "en": "Chunks in the prompt (top-k)"},
    "fusion": {"zh": "融合方法", "en": "Fusion"},
    "rerank": {"zh": "重排序", "en": "Rerank"},
    "rerank_none": {"zh": "未配置重排序模型（RAG_RERANKER=none）。", "en": "No reranker configured (RAG_RERANKER=none)."},
    "condense": {"zh": "改写追问为独立问题", "en": "Rewrite follow-up questions"},
    "translate": {"zh": "跨语言提问时译成文档语言再检索", "en": "Also search in the documents' language (translated)"},
    "llm": {"zh": "大模型", "en": "LLM"},
    "llm_ok": {"zh": "在线", "en": "answering"},
    "llm_down": {"zh": "无响应", "en": "not answering"},
    "upload": {"zh": "上传文档", "en": "Upload documents"},
    "upload_button": {"zh": "加入知识库", "en": "Add to knowledge base"},
    "indexing": {"zh": "正在建立索引…", "en": "Indexing…"},
    "indexed": {"zh": "索引完成", "en": "Indexing finished"},
    "index_failed": {"zh": "索引失败", "en": "Indexing failed"},
    "delete": {"zh": "删除", "en": "Delete"},
    "deleted": {"zh": "已删除", "en": "Deleted"},
    "new_chat": {"zh": "新对话", "en": "New chat"},
    "ask": {"zh": "输入问题…", "en": "Ask a question…"},
    "refused": {"zh": "文档中没有找到答案", "en": "Not found in the documents"},
    "closest": {"zh": "最接近的资料", "en": "Closest source"},
    "source": {"zh": "来源", "en": "Source"},
    "unsupported": {"zh": "以下句子没有得到所引资料的支持，已从回答中移除：",
                    "en": "Removed from the answer, because the sources they cite do not support them:"},
    "draft_unsupported": {"zh": "模型写出的回答没有得到资料支持（例如资料中没有的数字或名称），因此不作为答案：",
                          "en": "The model's draft is not supported by the sources (e.g. a number or name they do not "
                                "contain), so it is not given as an answer:"},
    "draft_uncited": {"zh": "模型写出的回答无法对应到任何一条资料，因此不作为答案：",
                      "en": "The model's draft could not be tied to any of the sources, so it is not given as an answer:"},
    "reason_asked_not_answered": {"zh": "资料里列出了这个问题，但没有给出答案。",
                                  "en": "The documents list this question but do not answer it."},
    "evidence": {"zh": "找到的依据", "en": "Evidence found"},
    "extractive_mode": {"zh": "只摘录原句（不调用大模型，立即回答）", "en": "Extract sentences only (no LLM, instant)"},
    "evidence_time": {"zh": "依据", "en": "evidence"},
    "extractive": {"zh": "摘录模式：以下是资料中最相关的原句。", "en": "Extractive mode: the most relevant sentences of the documents."},
    "llm_fallback": {"zh": "大模型暂不可用，以下是资料中最相关的原句（未经模型改写）。",
                     "en": "The LLM is not reachable right now; these are the most relevant sentences of the documents, "
                           "as written there."},
    "unsupported_cite": {"zh": "所引资料不支持引用它的句子", "en": "the citing sentence is not supported by this source"},
    "no_overlap": {"zh": "（回答中引用此处的句子与原文没有明显的字面重合）",
                   "en": "(the answer's citing sentences share little wording with this text)"},
    "attributed": {"zh": "其中 {n} 个引用标记由支持度检查补上（模型没有写出）。",
                   "en": "{n} citation marker(s) were added by the support check where the model gave none."},
    "chars": {"zh": "字符", "en": "chars"},
    "why": {"zh": "排序依据", "en": "Why it ranked"},
    "total_time": {"zh": "用时", "en": "took"},
    "first_token": {"zh": "首个字", "en": "first token"},
}

_SUMMARY = {
    "zh": "新增 {added}，更新 {updated}，未变 {unchanged}，删除 {deleted}，失败 {failed}；索引共 {chunks} 个片段",
    "en": "added {added}, updated {updated}, unchanged {unchanged}, deleted {deleted}, failed {failed}; {chunks} chunks in the index",
}


def label(key: str, lang: str) -> str:
    """The UI text for `key` in `lang` ("zh" or "en"); English when the language is unknown."""
    entry = LABELS[key]
    return entry.get(lang, entry["en"])


# --- uploads ---------------------------------------------------------------------------------


class UploadRejected(ValueError):
    """An uploaded file that cannot be saved (bad name, type or size)."""


def sanitize_upload_name(name: str, max_chars: int = MAX_NAME_CHARS) -> str:
    """A safe file name: NFKC, basename only, no leading dots or odd characters, CJK kept, length cut."""
    name = unicodedata.normalize("NFKC", name or "")
    name = re.split(r"[/\\]", name)[-1]  # basename, whatever the uploader's OS
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")  # control/format chars
    name = re.sub(r"[^\w\-. ()\u3400-\u9fff]", "_", name)
    name = re.sub(r"\s+", " ", name).strip().lstrip(". ")
    stem, dot, suffix = name.rpartition(".")
    if not dot:
        stem, suffix = name, ""
    suffix = suffix.lower()
    stem = stem.rstrip(". ")[: max(1, max_chars - len(suffix) - 1)].rstrip(". ")
    if not stem:
        raise UploadRejected(f"file name {name!r} has no usable characters")
    return f"{stem}.{suffix}" if suffix else stem


def check_upload(name: str, size_bytes: int, max_mb: float) -> str:
    """The sanitized name of an acceptable upload; raises UploadRejected with the reason."""
    safe = sanitize_upload_name(name)
    suffix = Path(safe).suffix.lower().lstrip(".")
    if suffix not in UPLOAD_TYPES:
        raise UploadRejected(f"{name}: unsupported file type {suffix or '(none)'}; use one of {', '.join(UPLOAD_TYPES)}")
    if size_bytes > max_mb * 1024 * 1024:
        raise UploadRejected(f"{name}: {size_bytes / 1048576:.1f} MB is over the {max_mb:g} MB limit (RAG_MAX_FILE_MB)")
    if size_bytes == 0:
        raise UploadRejected(f"{name}: the file is empty")
    return safe


def is_uploaded_copy(source: str, folder: Path) -> bool:
    """True when `source` lives in the uploads folder (so deleting it from the KB may delete the file)."""
    return Path(folder).resolve() in Path(source).resolve().parents


def ingest_summary(report, lang: str) -> str:
    """One line of counts from an IngestReport."""
    counts = {s: report.count(s) for s in ("added", "updated", "unchanged", "deleted", "failed")}
    return _SUMMARY.get(lang, _SUMMARY["en"]).format(**counts, chunks=report.chunks_total)


def document_rows(manifest: dict | None) -> list[tuple[str, str, int]]:
    """(source, display name, chunk count) per indexed file, by name."""
    files = (manifest or {}).get("files", {})
    return sorted(((src, Path(src).name, int(e.get("chunks", 0))) for src, e in files.items()),
                  key=lambda row: row[1])


# --- provenance ------------------------------------------------------------------------------


def hits_for(chunk_id: str, hits: Sequence[Hit]) -> list[Hit]:
    """The hits behind a cited span; a merged span's id is 'id1+id2+…'."""
    wanted = chunk_id.split("+")
    by_id = {h.chunk.id: h for h in hits}
    return [by_id[i] for i in wanted if i in by_id]


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def format_provenance(hit: Hit) -> str:
    """'dense #2 (0.842) · BM25 #1 (12.31) · fused 0.0325 · rerank —' for one hit."""
    dense = f"#{hit.dense_rank} ({_num(hit.dense_score)})" if hit.dense_rank else "—"
    bm25 = f"#{hit.bm25_rank} ({_num(hit.bm25_score, 2)})" if hit.bm25_rank else "—"
    return f"dense {dense} · BM25 {bm25} · fused {_num(hit.fused, 4)} · rerank {_num(hit.rerank)}"


def source_title(chunk, lang: str) -> str:
    """'部署手册.md > 3. 端口说明 (chars 120-480)' for an expander label."""
    name = Path(chunk.source).name if chunk.source else chunk.doc_id
    heading = f" > {chunk.heading}" if chunk.heading else ""
    return f"{name}{heading} ({label('chars', lang)} {chunk.start}-{chunk.end})"


# --- safe rendering --------------------------------------------------------------------------

_MD_IMAGE = re.compile(r"!\[([^\]\n]*)\](?:\([^)]*\)|\[[^\]]*\])?")
_MD_LINK = re.compile(r"\[([^\]\n]*)\]\(\s*<?([^)\s>]*)>?[^)]*\)")
_AUTOLINK = re.compile(r"<((?:https?|ftp|mailto|data|javascript):[^>\s]*)>", re.I)


def safe_markdown(text: str) -> str:
    """Answer text for st.markdown that makes the browser fetch nothing: images and links become plain text.

    A document can hold `![x](http://tracker/...)`; the model may copy it. Images are escaped, links are
    written as "text (address)" with the address in code so it is not linked either.
    """
    text = _MD_IMAGE.sub(lambda m: f"({m.group(1) or 'image'})", text)
    text = _MD_LINK.sub(lambda m: f"{m.group(1)} (`{m.group(2)}`)" if m.group(2) else m.group(1), text)
    return _AUTOLINK.sub(lambda m: f"`{m.group(1)}`", text)


def piece_spans(chunk, pieces: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Evidence pieces (document offsets) as offsets into `chunk.text`, an exact document span."""
    return [(s - chunk.start, e - chunk.start) for s, e in pieces if chunk.start <= s and e <= chunk.end]


# --- highlighting ----------------------------------------------------------------------------


def citing_sentences(answer_text: str, n: int) -> list[str]:
    """The sentences of an answer that carry the marker [n]."""
    return [s for s in split_sentences(answer_text) if n in marker_numbers(s)]


def highlight_spans(text: str, sentences: Sequence[str], threshold: float = HIGHLIGHT_THRESHOLD) -> list[tuple[int, int]]:
    """(start, end) of the source sentences that best back each of `sentences` lexically (rag.cite's measure).

    Per answer sentence, the source sentences scoring at least `threshold` and within NEAR_BEST of
    its best score are marked, so a sentence that merely shares a few terms stays unmarked.
    """
    pieces = sentence_spans(text)
    marked: set[int] = set()
    for sentence in sentences:
        scores = [lexical_support(sentence, text[a:b]) for a, b in pieces]
        best = max(scores, default=0.0)
        marked |= {i for i, score in enumerate(scores) if score >= threshold and score >= best - NEAR_BEST}
    return [pieces[i] for i in sorted(marked)]


def highlight_html(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """Escaped `text` with `<mark>` around the spans, as one line of HTML (st.markdown, unsafe_allow_html).

    Line breaks become `<br>`, so the block has no blank line and Markdown never parses the text
    (a '# ' or '1. ' in a document stays literal).
    """
    out, at = [], 0
    for start, end in sorted(spans):
        if start < at:
            continue
        out += [html.escape(text[at:start]), "<mark>", html.escape(text[start:end]), "</mark>"]
        at = end
    out.append(html.escape(text[at:]))
    body = re.sub(r"\n{3,}", "\n\n", "".join(out).strip()).replace("\n", "<br>")
    return f'<div class="rag-source" style="font-size: 0.9em; line-height: 1.6">{body}</div>'


# --- backend and errors ----------------------------------------------------------------------


def describe_llm(settings) -> str:
    """Which LLM backend answers: the embedded llama.cpp server or a configured URL + model."""
    if not settings.llm_base_url:
        size = settings.llm_size.upper()
        return f"embedded llama.cpp (Qwen2.5-Coder {size})"
    return f"{settings.llm_base_url} · {settings.llm_model}"


def error_message(exc: BaseException, lang: str, kb: str = "") -> str:
    """A readable message with what to do next, for any error the chain or ingest may raise."""
    from rag import store
    from rag.llm import LLMError
    from rag.llm_server import ServerStartError

    zh = lang == "zh"
    if isinstance(exc, LLMError | ServerStartError):
        return (f"大模型服务不可用：{exc}\n\n请启动服务，或设置 RAG_LLM_BASE_URL 指向可用的 OpenAI 兼容服务。" if zh else
                f"The LLM server is not answering: {exc}\n\nStart the server or set RAG_LLM_BASE_URL "
                "to a running OpenAI-compatible server.")
    if isinstance(exc, store.KBNotFound):
        return (f"知识库 {kb!r} 不存在或为空。请在侧边栏上传文档，或运行 `python -m ingest PATH --kb {kb}`。" if zh else
                f"Knowledge base {kb!r} is missing or empty: upload documents in the sidebar or run "
                f"`python -m ingest PATH --kb {kb}`.")
    if isinstance(exc, store.IndexMismatch):
        return (f"索引与当前设置不一致：{exc}" if zh else f"The index does not match the current settings: {exc}")
    if isinstance(exc, store.KBLocked):
        return (f"{exc}。请稍后再试。" if zh else f"{exc}. Try again in a moment.")
    if isinstance(exc, UploadRejected):
        return (f"上传被拒绝：{exc}" if zh else f"Upload rejected: {exc}")
    return (f"出错了（{type(exc).__name__}）：{exc}。详情见服务端日志。" if zh else
            f"Something went wrong ({type(exc).__name__}): {exc}. See the server log for details.")
