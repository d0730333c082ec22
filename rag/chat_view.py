"""Streamlit rendering of one chat turn: the answer, its citations, the evidence, the closest sources.

Used by `app.py`; the pure helpers it calls (labels, highlighting, safe Markdown) are in `rag/ui.py`.
"""

from __future__ import annotations

import streamlit as st

from rag import ui
from rag.records import paged_span


def source_title(chunk, lang: str) -> str:
    """The expander label of a source, with its page ('p. 7') when the document has pages."""
    return ui.source_title(chunk, lang) + (f" · {chunk.page_label}" if chunk.page_label else "")


def source_expander(title: str, chunk, hits, spans, lang: str, note: str = "") -> None:
    """One source: provenance of every hit behind it, then its text with the cited span marked."""
    with st.expander(title):
        if note:
            st.caption(note)
        for hit in hits:
            st.caption(f"{ui.label('why', lang)}: {ui.format_provenance(hit)}")
        st.markdown(ui.highlight_html(chunk.text, spans), unsafe_allow_html=True)


def render_evidence(sources, lang: str, expanded: bool = False) -> None:
    """The selected evidence: each numbered source with the sentences the model reads marked."""
    if not sources:
        return
    with st.expander(f"{ui.label('evidence', lang)} ({len(sources)})", expanded=expanded):
        for source in sources:
            span = source.span
            st.markdown(f"**[{source.n}]** {source_title(paged_span(span, source.chunks, source.pieces), lang)}")
            st.markdown(ui.highlight_html(span.text, ui.piece_spans(span, source.pieces)), unsafe_allow_html=True)


def render_answer(ans, lang: str) -> None:
    """Answer text, unsupported sentences, citations (or closest sources) as expanders."""
    if ans.notice.startswith("llm_unavailable"):
        st.info(ui.label("llm_fallback", lang))
    elif ans.answer_mode == "extractive" and not ans.refused:
        st.caption(ui.label("extractive", lang))
    if ans.refused:
        st.warning(f"{ui.label('refused', lang)} / {ui.label('refused', 'en' if lang == 'zh' else 'zh')}")
        if ans.refusal_reason == "asked_not_answered":
            st.caption(ui.label("reason_asked_not_answered", lang))
        if ans.refusal_reason in ("unsupported", "uncited") and ans.draft:
            st.caption(ui.label(f"draft_{ans.refusal_reason}", lang))
            st.text(ans.draft)
    else:
        st.markdown(ui.safe_markdown(ans.text))
    if getattr(ans, "attributed_citations", 0):
        st.caption(ui.label("attributed", lang).format(n=ans.attributed_citations))
    if ans.unsupported_sentences and not ans.refused:
        st.warning(ui.label("unsupported", lang) + "\n" + "\n".join(f"- {ui.safe_markdown(s)}" for s in ans.unsupported_sentences))
    for c in [] if ans.refused else ans.citations:
        spans = ui.piece_spans(c.chunk, c.pieces) or ui.highlight_spans(c.chunk.text, ui.citing_sentences(ans.text, c.n))
        note = "" if c.supported else "⚠ " + ui.label("unsupported_cite", lang)
        if not spans:
            note = (note + " " + ui.label("no_overlap", lang)).strip()
        title = f"[{c.n}]{'' if c.supported else ' ⚠'} {source_title(c.chunk, lang)}"
        source_expander(title, c.chunk, ui.hits_for(c.chunk.id, ans.hits), spans, lang, note)
    if ans.refused or not ans.citations:
        for i, hit in enumerate(ans.hits[:3], start=1):
            title = f"{ui.label('closest', lang)} {i}: {source_title(hit.chunk, lang)}"
            source_expander(title, hit.chunk, [hit], [], lang)
    timings = ans.timings_ms
    if timings.get("total"):
        evidence = f" · {ui.label('evidence_time', lang)} {timings['evidence'] / 1000:.1f} s" if "evidence" in timings else ""
        first = f" · {ui.label('first_token', lang)} {timings['first_token'] / 1000:.1f} s" if "first_token" in timings else ""
        st.caption(f"{ui.label('total_time', lang)} {timings['total'] / 1000:.1f} s{evidence}{first}")


def render_message(message: dict, lang: str) -> None:
    """One turn of the conversation."""
    if message.get("error"):
        st.error(message["error"])
    elif message.get("answer") is not None:
        render_answer(message["answer"], lang)
        render_evidence(message["answer"].evidence, lang)
    else:
        st.markdown(message["content"])
