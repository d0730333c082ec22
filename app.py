"""Streamlit chat over a knowledge base: `streamlit run app.py` (settings from RAG_* env / RAG_CONFIG).

The page only renders and calls `rag` / `ingest`; pure helpers live in `rag/ui.py`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import streamlit as st

from rag import store, ui
from rag.chat_view import render_evidence, render_message
from rag.settings import Settings, load_settings

logger = logging.getLogger("app")

MODES = ("hybrid", "dense", "bm25")
EMBEDDER_FIELDS = {"embedder", "cache_dir", "device", "query_prefix", "passage_prefix"}
LLM_FIELDS = {"llm_base_url", "llm_model", "llm_api_key", "llm_timeout_s", "llm_retries", "llm_size",
              "llm_ctx", "llm_threads", "cache_dir"}
RERANKER_FIELDS = {"reranker", "reranker_model", "device"}


def key_of(settings: Settings, fields: set[str]) -> str:
    """A cache key made of the settings a resource depends on."""
    return settings.model_dump_json(include=fields)


# --- resources, loaded once per process -------------------------------------------------------


@st.cache_resource(show_spinner="Loading the embedder…")
def get_embedder(key: str, _settings: Settings):
    """The embedder (rag.embed) for concrete settings (one knowledge base's), shared by every session."""
    from rag.embed import load_embedder

    return load_embedder(_settings)


@st.cache_resource(show_spinner="Starting the LLM…")
def get_llm(key: str, _settings: Settings):
    """The LLM client; starts the embedded llama.cpp server when no base URL is set."""
    from rag.llm import client_from_settings

    return client_from_settings(_settings)


@st.cache_resource(show_spinner=False)
def get_reranker(key: str, _settings: Settings):
    """The configured reranker or None."""
    from rag.rerank import load_reranker

    return load_reranker(_settings)


@st.cache_resource(show_spinner="Loading the knowledge base…", max_entries=4)
def open_kb(index_dir: str, kb: str, version: str, _settings: Settings):
    """One loaded KB version, keyed on its version folder (unique per write), so re-ingests show up."""
    from rag.retrieve import open_retriever

    return open_retriever(_settings, embedders=lambda concrete: get_embedder(key_of(concrete, EMBEDDER_FIELDS), concrete))


@st.cache_resource(show_spinner=False, max_entries=16)
def get_retriever(index_dir: str, kb: str, version: str, settings_key: str, _settings: Settings):
    """A retriever over the cached KB version with one combination of session retrieval settings."""
    return open_kb(index_dir, kb, version, _settings).with_settings(_settings)


@st.cache_data(ttl=30, show_spinner=False)
def llm_health(key: str, _settings: Settings) -> bool:
    """Whether the LLM answers /health, re-checked at most every 30 s."""
    try:
        return get_llm(key, _settings).health()
    except Exception:  # noqa: BLE001 - a server that cannot start is simply "down" here
        logger.warning("LLM health check failed", exc_info=True)
        return False


def flash(kind: str, text: str) -> None:
    """Queue a message shown after the next rerun."""
    st.session_state.flash.append((kind, text))


def clear_kb_cache() -> None:
    """Forget loaded KB states so the next question sees the new version."""
    open_kb.clear()
    get_retriever.clear()


# --- sidebar ---------------------------------------------------------------------------------


def create_kb() -> None:
    """Callback of the 'create' button: validate the name and select the new (still empty) KB."""
    name = st.session_state.new_kb.strip()
    try:
        store.check_kb_name(name)
    except ValueError as e:
        flash("error", str(e))
        return
    st.session_state.pending_kbs.add(name)
    st.session_state.kb = name
    st.session_state.new_kb = ""
    flash("success", ui.label("kb_created", st.session_state.lang))


def choose_kb(settings: Settings, lang: str) -> str:
    """Knowledge-base selector plus 'create knowledge base'."""
    existing = store.kb_names(settings)
    options = sorted(set(existing) | st.session_state.pending_kbs | ({settings.kb} if not existing else set()))
    if st.session_state.get("kb") not in options:
        st.session_state.kb = settings.kb if settings.kb in options else options[0]
    kb = st.sidebar.selectbox(ui.label("kb", lang), options, key="kb")
    col1, col2 = st.sidebar.columns([2, 1], vertical_alignment="bottom")
    col1.text_input(ui.label("new_kb", lang), key="new_kb")
    col2.button(ui.label("create_kb", lang), on_click=create_kb, width="stretch")
    return kb


def show_stats(retriever, lang: str) -> None:
    """Documents, chunks, embedder and last update of the selected KB."""
    stats = retriever.state.stats()
    col1, col2 = st.sidebar.columns(2)
    col1.metric(ui.label("documents", lang), stats["documents"])
    col2.metric(ui.label("chunks", lang), stats["chunks"])
    st.sidebar.caption(f"{ui.label('embedder', lang)}: {stats['embedder']} · {stats['dense_index']}  \n"
                       f"{ui.label('updated', lang)}: {stats['updated']}")


def retrieval_settings(settings: Settings, lang: str) -> tuple[Settings, bool]:
    """Session retrieval settings; returns (request settings, rerank on)."""
    with st.sidebar.expander(ui.label("retrieval", lang)):
        mode = st.radio(ui.label("mode", lang), MODES, index=MODES.index(settings.retrieval_mode),
                        horizontal=True, key="mode")
        top_k = st.slider(ui.label("top_k", lang), 1, max(20, settings.top_k), settings.top_k, key="top_k")
        fusion = st.radio(ui.label("fusion", lang), ("rrf", "weighted"), index=("rrf", "weighted").index(settings.fusion),
                          horizontal=True, key="fusion", disabled=mode != "hybrid")
        no_reranker = settings.reranker == "none"
        rerank_on = st.toggle(ui.label("rerank", lang), value=not no_reranker, disabled=no_reranker, key="rerank")
        if no_reranker:
            st.caption(ui.label("rerank_none", lang))
        condense = st.toggle(ui.label("condense", lang), value=settings.condense_followups, key="condense")
        translate = st.toggle(ui.label("translate", lang), value=settings.translate_queries, key="translate")
        extractive = st.toggle(ui.label("extractive_mode", lang), value=settings.answer_mode == "extractive",
                               key="extractive")
    update = {"retrieval_mode": mode, "top_k": top_k, "fusion": fusion, "condense_followups": condense,
              "query_translation": "on" if translate else "off",
              "answer_mode": "extractive" if extractive else "generative"}
    return settings.model_copy(update=update), rerank_on and not no_reranker


def ingest_uploads(files, settings: Settings, lang: str) -> None:
    """Save valid uploads into `<index_dir>/<kb>.uploads/`, ingest them, report per file."""
    from ingest.pipeline import run_ingest

    folder = store.uploads_dir(settings.index_dir, settings.kb)
    saved = []
    with st.status(ui.label("indexing", lang), expanded=True) as status:
        bar = st.progress(0.0)
        for i, upload in enumerate(files, start=1):
            try:
                name = ui.check_upload(upload.name, upload.size, settings.max_file_mb)
            except ui.UploadRejected as e:
                flash("error", ui.error_message(e, lang))
                continue
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(upload.getvalue())
            saved.append(folder / name)
            bar.progress(i / len(files) / 2, text=name)
        if saved:
            try:
                report = run_ingest(saved, settings, progress=False)
            except Exception as e:  # noqa: BLE001 - shown to the user, not raised
                logger.exception("ingest failed")
                flash("error", ui.error_message(e, lang, settings.kb))
            else:
                flash("warning" if report.failed else "success", ui.ingest_summary(report, lang))
                for failed in report.failed:
                    flash("error", f"{Path(failed.source).name}: {failed.reason}")
                    Path(failed.source).unlink(missing_ok=True)  # keep only indexed copies
        bar.progress(1.0)
        status.update(label=ui.label("indexed", lang), state="complete")
    clear_kb_cache()
    st.rerun()


def delete_document(source: str, settings: Settings, lang: str) -> None:
    """Remove one file's documents from both indexes (and its uploaded copy)."""
    from ingest.pipeline import run_ingest

    try:
        run_ingest([], settings, deletes=[Path(source)], progress=False)
    except Exception as e:  # noqa: BLE001
        logger.exception("delete failed")
        flash("error", ui.error_message(e, lang, settings.kb))
    else:
        if ui.is_uploaded_copy(source, store.uploads_dir(settings.index_dir, settings.kb)):
            Path(source).unlink(missing_ok=True)
        flash("success", f"{ui.label('deleted', lang)}: {Path(source).name}")
    clear_kb_cache()
    st.rerun()


def documents_panel(retriever, settings: Settings, lang: str) -> None:
    """Upload form and the list of documents with a delete button each."""
    rows = ui.document_rows(retriever.state.manifest.to_dict() if retriever else None)
    with st.sidebar.expander(f"{ui.label('documents', lang)} ({len(rows)})", expanded=not rows):
        with st.form("upload", clear_on_submit=True, border=False):
            files = st.file_uploader(ui.label("upload", lang), type=list(ui.UPLOAD_TYPES), accept_multiple_files=True)
            submitted = st.form_submit_button(ui.label("upload_button", lang))
        if submitted and files:
            ingest_uploads(files, settings, lang)
        for source, name, chunks in rows:
            col1, col2 = st.columns([4, 1], vertical_alignment="center")
            col1.markdown(f"{name}  \n:gray[{chunks} {ui.label('chunks', lang)}]")
            if col2.button(":material/delete:", key=f"del:{source}", help=f"{ui.label('delete', lang)} {name}"):
                delete_document(source, settings, lang)


# --- chat ------------------------------------------------------------------------------------


def ask(question: str, version: str | None, settings: Settings, rerank_on: bool, lang: str,
        kb_error: Exception | None) -> dict:
    """Run the chain with streaming into a placeholder; returns the assistant message."""
    from rag.chain import answer

    history = [{"role": m["role"], "content": m["content"]} for m in st.session_state.messages
               if m.get("content") and not m.get("error")]
    placeholder = st.empty()
    evidence_box = st.empty()
    parts: list[str] = []

    def on_evidence(sources) -> None:  # shown before the LLM starts
        with evidence_box.container():
            render_evidence(sources, lang, expanded=True)

    def on_token(piece: str) -> None:
        parts.append(piece)
        placeholder.markdown(ui.safe_markdown("".join(parts)) + "▌")

    try:
        if version is None or kb_error is not None:
            raise kb_error or store.KBNotFound(settings.kb)
        llm = get_llm(key_of(settings, LLM_FIELDS), settings)
        reranker = get_reranker(key_of(settings, RERANKER_FIELDS), settings) if rerank_on else None
        request = get_retriever(str(settings.index_dir), settings.kb, version, settings.model_dump_json(), settings)
        ans = answer(question, history, settings=settings, retriever=request, llm=llm, reranker=reranker,
                     on_token=on_token, on_evidence=on_evidence)
        message = {"role": "assistant", "content": ans.text, "answer": ans}
    except Exception as e:  # noqa: BLE001 - every failure becomes a readable message
        logger.warning("question failed: %s", e, exc_info=True)
        if not isinstance(e, store.KBNotFound | store.IndexMismatch):
            get_llm.clear()  # an embedded server that died is restarted on the next question
            llm_health.clear()
        message = {"role": "assistant", "content": "", "error": ui.error_message(e, lang, settings.kb)}
    evidence_box.empty()
    with placeholder.container():
        render_message(message, lang)
    return message


# --- page ------------------------------------------------------------------------------------


def main() -> None:
    """Build the page top to bottom."""
    st.set_page_config(page_title="RAG · DocQA", page_icon="📚", layout="wide")
    state = st.session_state
    state.setdefault("lang", os.environ.get("RAG_UI_LANG", "zh") if os.environ.get("RAG_UI_LANG") in ("zh", "en") else "zh")
    for name, default in (("messages", []), ("pending_kbs", set()), ("flash", [])):
        state.setdefault(name, default)
    try:
        base = load_settings()
    except Exception as e:  # noqa: BLE001
        st.error(f"Invalid settings (RAG_* environment variables or RAG_CONFIG): {e}")
        st.stop()

    lang = st.sidebar.radio(":material/translate: " + ui.label("language", state.lang), ("zh", "en"), horizontal=True,
                            key="lang", format_func=lambda x: {"zh": "中文", "en": "English"}[x])
    if st.sidebar.button(ui.label("new_chat", lang), icon=":material/add_comment:", width="stretch"):
        state.messages = []
    kb = choose_kb(base, lang)
    for kind, text in state.flash:
        getattr(st.sidebar, kind)(text)
    state.flash = []
    settings = base.model_copy(update={"kb": kb})

    retriever, kb_error, version = None, None, None
    try:
        version = store.kb_version(settings)
        if version is None:
            st.sidebar.info(ui.label("kb_empty", lang))
        else:
            retriever = open_kb(str(settings.index_dir), kb, version, settings)
            show_stats(retriever, lang)
    except Exception as e:  # noqa: BLE001
        kb_error = e
        st.sidebar.error(ui.error_message(e, lang, kb))
    request_settings, rerank_on = retrieval_settings(settings, lang)
    llm_box = st.sidebar.container()
    documents_panel(retriever, settings, lang)

    st.title(ui.label("title", lang))
    for message in state.messages:
        with st.chat_message(message["role"]):
            render_message(message, lang)
    question = st.chat_input(ui.label("ask", lang))
    if question:
        with st.chat_message("user"):
            st.markdown(question)
        with st.chat_message("assistant"):
            reply = ask(question, version, request_settings, rerank_on, lang, kb_error)
        state.messages += [{"role": "user", "content": question}, reply]

    with llm_box:  # last, so a first start of the embedded server never delays the chat
        ok = llm_health(key_of(settings, LLM_FIELDS), settings)
        st.caption(f"{ui.label('llm', lang)}: {ui.describe_llm(settings)}  \n"
                   f"{':green[●] ' + ui.label('llm_ok', lang) if ok else ':red[●] ' + ui.label('llm_down', lang)}")


main()
