"""Which embedder a knowledge base uses.

`embedder = "auto"` (the default) chooses per knowledge base: when the knowledge base gets its first
documents, from their language (bge-small-en-v1.5 for an English corpus, multilingual e5 for a Chinese or
mixed one); from then on, the embedder and prefixes its manifest records. Any other `embedder` value is
used as configured (and `store.check_compatible` refuses a knowledge base built with another).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from rag.settings import AUTO_EMBEDDER, BUNDLED_EMBEDDER, BUNDLED_EN_EMBEDDER, EMBEDDER_PREFIXES, Settings
from rag.text import script_counts

logger = logging.getLogger(__name__)

# An English corpus: Latin letters are at least this share of its letters (CJK characters + Latin letters).
# One CJK character carries about as much as 3-5 Latin letters, so 5% CJK characters is already ~15% of the
# text in Chinese, which bge-small-en cannot embed. Measured shares: the English FAQ of data/sample (a few
# Chinese words) 0.994; data/sample as a whole (3 Chinese, 2 English files) 0.633; llm-notes-zh 0.153.
ENGLISH_LATIN_SHARE = 0.95
SAMPLE_CHARS = 50_000  # per document: longer texts are read through an evenly spaced sample of characters


def embedder_for_counts(cjk: int, latin: int) -> str:
    """The bundled embedder for a corpus with these letter counts: bge-small-en for English, e5 otherwise."""
    letters = cjk + latin
    return BUNDLED_EN_EMBEDDER if letters and latin >= ENGLISH_LATIN_SHARE * letters else BUNDLED_EMBEDDER


def corpus_counts(texts: Iterable[str]) -> tuple[int, int]:
    """(CJK characters, Latin letters) of the texts; a long text is counted on every n-th character, scaled."""
    cjk = latin = 0
    for text in texts:
        step = max(1, len(text) // SAMPLE_CHARS)
        c, la = script_counts(text[::step])
        cjk, latin = cjk + c * step, latin + la * step
    return cjk, latin


def with_embedder(settings: Settings, embedder: str, prefixes: tuple[str, str] | None = None) -> Settings:
    """`settings` naming a concrete embedder, with its prefixes (default: the embedder's own convention)."""
    query_prefix, passage_prefix = prefixes or EMBEDDER_PREFIXES[embedder]
    return settings.model_copy(update={"embedder": embedder, "query_prefix": query_prefix,
                                       "passage_prefix": passage_prefix})


def for_texts(settings: Settings, texts: Iterable[str]) -> Settings:
    """The settings that build a new knowledge base of these cleaned document texts."""
    if settings.embedder != AUTO_EMBEDDER:
        return settings
    cjk, latin = corpus_counts(texts)
    chosen = embedder_for_counts(cjk, latin)
    if cjk or latin:  # (no texts: a model loaded outside any knowledge base, or one created empty)
        logger.info("embedder auto: %s for %s (%d CJK characters, %d Latin letters)", chosen, settings.kb, cjk, latin)
    return with_embedder(settings, chosen)


def for_manifest(settings: Settings, manifest) -> Settings:
    """The settings that read or extend the knowledge base of `manifest` (a `store.Manifest`, or None)."""
    if settings.embedder != AUTO_EMBEDDER or manifest is None:
        return settings
    built = manifest.embedder
    return with_embedder(settings, built.id, (built.query_prefix, built.passage_prefix))


def chooses_anew(settings: Settings, manifest) -> bool:
    """Whether an ingest chooses the embedder again: "auto" over a knowledge base that holds no chunks yet
    (created empty, or emptied), so its first documents decide. A knowledge base with chunks keeps its own."""
    return settings.embedder == AUTO_EMBEDDER and manifest is not None and not manifest.counts.get("chunks", 0)
