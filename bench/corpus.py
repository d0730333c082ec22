"""Scale-up corpora from real chunks: llm-notes-zh and scifact chunked by the real chunker, then
replicated with perturbation (sentences shuffled, one dropped, random corpus words inserted).

Tokens are real jieba tokens (`rag.text.tokenize`): every distinct sentence is tokenized once
(two worker processes) and a perturbed chunk's tokens are the concatenation of its sentences'
tokens plus the inserted words. `token_agreement` checks that against tokenizing the text directly.
Everything is cached in memory only, per process.
"""

from __future__ import annotations

import functools
import multiprocessing
import random
from dataclasses import dataclass
from pathlib import Path

from bench.common import LLM_NOTES, SCIFACT

INSERTED_WORDS = 3  # random corpus words added to every replica


@dataclass(frozen=True)
class BaseChunk:
    """A real chunk split into sentences, each with its jieba tokens."""

    source: str  # "llm-notes-zh" | "scifact"
    sentences: tuple[str, ...]
    tokens: tuple[tuple[str, ...], ...]


@dataclass
class ScaledCorpus:
    """`n` chunk texts with their BM25 tokens (row-aligned)."""

    texts: list[str]
    tokens: list[list[str]]
    sources: list[str]
    n_base: int


def embedder():
    """The configured embedder (loaded once per process)."""
    from rag.embed import load_embedder
    from rag.settings import Settings

    return load_embedder(Settings())


@functools.lru_cache(maxsize=2)
def real_chunks(scifact_docs: int) -> list[tuple[str, str]]:
    """(source, text) of every llm-notes-zh chunk and of the first `scifact_docs` scifact abstracts."""
    from ingest.chunk import ChunkConfig, chunk_document
    from ingest.clean import clean
    from ingest.load import discover, load
    from rag.settings import Settings

    settings = Settings()
    config = ChunkConfig(chunk_tokens=settings.chunk_tokens, overlap_tokens=settings.chunk_overlap)
    count = embedder().count_tokens
    out = []
    for name, path, limit in (("llm-notes-zh", LLM_NOTES, None), ("scifact", SCIFACT, scifact_docs)):
        found, _ = discover([Path(path)])
        docs = [d for sf in found for d in load(sf, max_bytes=1 << 30)][:limit]
        for doc in docs:
            text = clean(doc.text).text
            out += [(name, c.text) for c in chunk_document(doc.id, doc.source, text, count_tokens=count, config=config)]
    return out


def _tokenize_all(texts: list[str]) -> list[list[str]]:
    """jieba tokens for each text, on two worker processes when there are many."""
    from rag.text import tokenize

    if len(texts) < 2000:
        return [tokenize(t) for t in texts]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        return pool.map(tokenize, texts, chunksize=256)


@functools.lru_cache(maxsize=2)
def base_chunks(scifact_docs: int) -> tuple[BaseChunk, ...]:
    """The real chunks with per-sentence tokens."""
    from ingest.chunk import split_sentences

    split = [(src, tuple(text[a:b] for a, b in split_sentences(text))) for src, text in real_chunks(scifact_docs)]
    distinct = sorted({s for _, sents in split for s in sents})
    tokens = dict(zip(distinct, map(tuple, _tokenize_all(distinct))))
    return tuple(BaseChunk(src, sents, tuple(tokens[s] for s in sents)) for src, sents in split if sents)


@functools.cache
def _word_tokens(word: str) -> tuple[str, ...]:
    """Tokens of an inserted corpus token read back as text (a stem is not always its own stem)."""
    from rag.text import tokenize

    return tuple(tokenize(word))


def _replica(chunk: BaseChunk, rng: random.Random, pool: list[str]) -> tuple[str, list[str]]:
    """A perturbed copy: sentence order shuffled, one sentence dropped (if >2), words inserted."""
    order = list(range(len(chunk.sentences)))
    rng.shuffle(order)
    if len(order) > 2:
        order.pop()
    parts = [(chunk.sentences[i], list(chunk.tokens[i])) for i in order]
    for _ in range(INSERTED_WORDS):
        word = rng.choice(pool)
        parts.insert(rng.randrange(len(parts) + 1), (word, list(_word_tokens(word))))
    return " ".join(p for p, _ in parts), [t for _, toks in parts for t in toks]


@functools.lru_cache(maxsize=3)
def scaled(n: int, scifact_docs: int = 1500, seed: int = 0) -> ScaledCorpus:
    """`n` chunks: the real ones first, then perturbed replicas cycling over them."""
    base = base_chunks(scifact_docs)
    rng = random.Random(seed)
    # Insert words drawn by corpus frequency (a flat list of every token occurrence).
    pool = [t for c in base for toks in c.tokens for t in toks]
    texts, tokens, sources = [], [], []
    for i in range(n):
        chunk = base[i % len(base)]
        if i < len(base):
            text, toks = " ".join(chunk.sentences), [t for s in chunk.tokens for t in s]
        else:
            text, toks = _replica(chunk, rng, pool)
        texts.append(text)
        tokens.append(toks)
        sources.append(chunk.source)
    return ScaledCorpus(texts, tokens, sources, len(base))


def token_agreement(corpus: ScaledCorpus, sample: int = 200, seed: int = 1) -> float:
    """Share of sampled replicas whose cached tokens equal `tokenize(text)` exactly."""
    from rag.text import tokenize

    rng = random.Random(seed)
    rows = [rng.randrange(corpus.n_base, len(corpus.texts)) for _ in range(sample)] if len(corpus.texts) > corpus.n_base else []
    return sum(tokenize(corpus.texts[r]) == corpus.tokens[r] for r in rows) / len(rows) if rows else 1.0
