"""Citations in generated answers: parse [n] markers and judge each sentence's support (rag.attribute moves a
marker to the source that says its sentence).

Support threshold (lexical, 0..1): a cited sentence is "supported" when at least
`SUPPORT_THRESHOLD` of its content tokens (rag.text.tokenize) - or, for Chinese, of its character
bigrams - occur in the text of the sources it cites. Chosen by looking at real answers of the bundled
0.5B model over llm-notes-zh chunks and at crafted ones (tests/test_cite.py): sentences copied or
paraphrased from the cited source scored 0.8-1.0; a sentence the 0.5B model copied from the prompt's
example and pinned on an unrelated source scored 0.4 (common words such as 信息/重要/用于 match any
450-character chunk); invented facts scored 0.0-0.17. Hence 0.5. With an `embed` callable, a sentence
also counts as supported when its cosine to a cited source reaches `COSINE_THRESHOLD` (not tuned on
real data yet: set high because e5-style cosines between any two same-domain texts run high).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from rag.evidence import GAP
from rag.facts import (
    LIST_NUMBER,
    compared_subjects,
    missing_facts,
    salient_terms,
    swapped_names,
    unnamed_subjects,
)
from rag.lexicon import translated_overlap
from rag.model_text import tidy
from rag.prompt import Source
from rag.records import Citation
from rag.text import (
    CITATION_MARK,
    CJK_CHAR,
    SENTENCE,
    WORD_CHAR,
    is_question,
    language,
    language_of_counts,
    normalize,
    script_counts,
    tokenize,
)

SUPPORT_THRESHOLD = 0.5
COSINE_THRESHOLD = 0.80
COPIES = 0.8  # share of a sentence's words one source sentence holds for the sentence to copy it (_copied)
CONTRIBUTES = 0.25  # share of an uncited sentence's words a source must hold to be one it draws on (_contributors)
SHORT_CLAIM_CHARS = 8  # "不会掉点。": too few characters for overlap to mean anything
# An English sentence citing Chinese sources is not supported by meaning (cosine) alone when its cited text holds
# less than this share of its words (rag.lexicon):
# the labelled set's supported translations hold 0.33-0.76, a sentence about an unrelated meeting 0.0.
TRANSLATED_FLOOR = 0.25

_MARK = CITATION_MARK
_NUM = re.compile(r"\d{1,3}|[-–]")
_MARKS_RUN = re.compile(rf"^(?:\s*{_MARK.pattern})+")


@dataclass(frozen=True)
class SentenceSupport:
    """How well one answer sentence is backed by the sources it cites."""

    text: str  # the sentence, citation markers included
    cited: tuple[int, ...]
    lexical: float  # share of content tokens / CJK bigrams found in the cited text
    cosine: float | None  # best embedding cosine to a cited source, when an embedder was given
    status: str  # "supported" | "unsupported" | "uncited"
    missing: tuple[str, ...] = ()  # numbers / named terms the cited text does not contain

    @property
    def supported(self) -> bool:
        """True for a cited sentence that passed the check."""
        return self.status == "supported"


def _numbers(group: str) -> list[int]:
    """'1, 2' -> [1, 2]; '1-3' -> [1, 2, 3]."""
    out: list[int] = []
    tokens = _NUM.findall(group)
    i = 0
    while i < len(tokens):
        if tokens[i] in "-–" and out and i + 1 < len(tokens):
            out += range(out[-1] + 1, int(tokens[i + 1]) + 1)
            i += 2
            continue
        if tokens[i] not in "-–":
            out.append(int(tokens[i]))
        i += 1
    return out


def marker_numbers(text: str) -> list[int]:
    """Every citation number in `text`, in order of appearance."""
    return [n for m in _MARK.finditer(text) for n in _numbers(m.group(1))]


def strip_markers(text: str) -> str:
    """`text` without citation markers."""
    return _MARK.sub("", text)


def parse_citations(answer_text: str, sources: Sequence[Source]) -> tuple[list[Citation], int, str]:
    """(one Citation per cited source in order of first use, invalid numbers removed, cleaned text).

    Valid markers are rewritten as `[n]` each; numbers that name no source are dropped and counted;
    the model's habits are undone first (rag.model_text.tidy: markers in words, debris, copied gap marks,
    markers written before their sentence).
    """
    answer_text = tidy(answer_text)
    by_n = {s.n: s for s in sources}
    removed = 0
    order: list[int] = []

    def rewrite(match: re.Match) -> str:
        nonlocal removed
        numbers = _numbers(match.group(1))
        valid = [n for n in dict.fromkeys(numbers) if n in by_n]
        removed += len(numbers) - len([n for n in numbers if n in by_n])
        order.extend(n for n in valid if n not in order)
        return "".join(f"[{n}]" for n in valid)

    cleaned = _MARK.sub(rewrite, answer_text)
    cleaned = re.sub(r"[ \t]+([。，！？.,!?;；])", r"\1", cleaned)  # space left before punctuation
    cleaned = re.sub(r"[ \t]{2,}", " ", cleaned).strip()
    citations = [Citation(n=n, chunk=by_n[n].span) for n in order]
    return citations, removed, cleaned


def split_sentences(text: str) -> list[str]:
    """Sentences on Chinese and English end punctuation; markers after the stop stay with it."""
    out: list[str] = []
    for piece in (m.group(0) for m in SENTENCE.finditer(text)):
        lead = _MARKS_RUN.match(piece)
        if lead and out:  # "句子。[1]" - the marker belongs to the sentence before
            out[-1] += lead.group(0)
            piece = piece[lead.end():]
        if piece.strip():
            out.append(piece)
    return [s.strip() for s in out if WORD_CHAR.search(strip_markers(s))]


def _bigrams(text: str) -> frozenset[str]:
    chars = CJK_CHAR.findall(text)
    return frozenset(a + b for a, b in zip(chars, chars[1:], strict=False))


@functools.lru_cache(maxsize=4096)
def _words(text: str, lowered: bool) -> tuple[str, tuple[str, ...], frozenset[str], frozenset[str]]:
    """(normalized text, its tokens, their set, its CJK bigrams). The check compares every answer sentence with
    every source and source sentence, again for each sentence a stream completes: each text is read once."""
    text = normalize(text).lower() if lowered else normalize(text)
    tokens = tuple(tokenize(text))
    return text, tokens, frozenset(tokens), _bigrams(text)


def lexical_support(sentence: str, cited_text: str) -> float:
    """Share of the sentence's content tokens found in the cited text (CJK: best of tokens, bigrams)."""
    _, tokens, _, grams = _words(strip_markers(sentence), False)
    cited, _, cited_tokens, cited_grams = _words(cited_text, True)
    token_share = (
        sum(t in cited_tokens or t in cited for t in tokens) / len(tokens) if tokens else 0.0
    )
    if not grams:
        return token_share
    gram_share = len(grams & cited_grams) / len(grams)
    return max(token_share, gram_share)


# --- the check -------------------------------------------------------------------------------


def statements(text: str) -> str:
    """`text` without its questions: what a source states.

    Notes often hold questions with no answer under them (a checklist of interview questions, a heading
    that asks). An answer built on such a line restates the question at best and invents at worst, so
    support is judged against the statements only; list numbers are dropped too (the "5" of "5. 优点"
    does not back "秩设成 1 到 5"), also where a packed piece starts with one ("… 1. 低秩适应").
    """
    return "\n".join(LIST_NUMBER.sub("", s.removeprefix(GAP.lstrip())) for s in split_sentences(text) if not is_question(s))


def source_headings(source: Source) -> tuple[str, ...]:
    """The headings above a source's chunks, outermost first, each once."""
    return tuple(dict.fromkeys(h for c in source.chunks for h in c.heading_path))


def source_labels(source: Source) -> str:
    """What names a source's subject besides its text: its document's title and the headings above it."""
    return "\n".join([source.title, *source_headings(source)])


def cosines(sentences: list[str], texts: list[str], embed: Callable) -> np.ndarray:
    vectors = np.asarray(embed(sentences + texts), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
    return vectors[: len(sentences)] @ vectors[len(sentences):].T


def judge_sentence(sentence: str, cited_text: str, cosine: float | None, *, known: str = "", labels: str = "",
                   threshold: float = SUPPORT_THRESHOLD, cosine_threshold: float = COSINE_THRESHOLD,
                   named_in: str | None = None) -> tuple[float, list[str], bool]:
    """(lexical support, missing facts, supported) of one sentence against the text it cites.

    A number or named term the cited text lacks makes the sentence unsupported whatever its overlap, and
    so does a subject the question names that neither the cited text nor its `labels` (headings, titles)
    name (`unnamed_subjects`), and a name put in place of another in a sentence it copies (`swapped_names`:
    "Prefix LM 只涉及到 Decoder 部分" copied from "Causal LM只涉及到Decoder部分");
    otherwise enough lexical overlap makes it supported - of all its words and of its words besides its names
    (`_unsaid_relation`) - or, where words cannot be compared (an answer
    in another language than its source, a claim of a few characters), a high enough embedding cosine.
    In the same language the cosine says "about the same topic", not "says the same": on the dev run
    it passed invented explanations assembled from a source's headings (lexical 0.1-0.4, e5 cosine ~0.9).
    `named_in` (default: the cited text and its labels) is where the question's subjects must be named.
    """
    lexical = lexical_support(sentence, cited_text)
    named_in = cited_text + "\n" + labels if named_in is None else named_in
    # a bare answer ("BPE[1]" to "BERT采用的是哪一种子词切分方法?") is about every subject the question names
    about = known if is_bare(sentence) else sentence
    missing = missing_facts(sentence, cited_text, known) + unnamed_subjects(about, known, named_in)
    if lexical >= threshold:
        missing += _swaps(sentence, cited_text, compared_subjects(known))
        if words_comparable(sentence, cited_text) and _unsaid_relation(sentence, cited_text, threshold):
            missing.append("words between its names")
    by_meaning = (cosine is not None and cosine >= cosine_threshold and not words_comparable(sentence, cited_text)
                  and _translation_holds(sentence, cited_text))
    return lexical, missing, not missing and (lexical >= threshold or by_meaning)


def _unsaid_relation(sentence: str, cited_text: str, threshold: float) -> bool:
    """Whether the words the sentence says between its names fall short of `threshold` in the cited text: names
    found anywhere in it lift a sentence over the threshold by themselves. "GLM-130B是由OpenAI发布的" over
    "如GLM-130B模型、OpenAI的A、B、C、D四大模型,都是基座模型" holds both names and none of 由 / 发布."""
    words = strip_markers(sentence)
    for term in sorted(salient_terms(words), key=len, reverse=True):
        words = words.replace(term, " ")
    return bool(tokenize(words)) and lexical_support(words, cited_text) < threshold


_CONTRAST = re.compile(r"(?<=[,，])\s*(?=而|但|whereas\b|while\b|but\b)", re.I)  # "X…，而 Y…": two claims


def _swaps(sentence: str, cited_text: str, compared: tuple[str, ...]) -> list[str]:
    """`swapped_names` of the sentence, and of each side of a contrast in it ("稀疏向量包含…，而稠密向量…"), against
    the source text each copies."""
    parts = _CONTRAST.split(sentence)
    found = [swapped_names(part, copied, compared) for part in dict.fromkeys([sentence, *parts])
             if (copied := _copied(part, cited_text))]
    return list(dict.fromkeys(name for names in found for name in names))


def _copied(sentence: str, cited_text: str) -> str:
    """The source sentence `sentence` copies (one holding COPIES of its words, the closest), else two adjacent ones
    that do ("A 将查询分成多个组…，从而提高效率" from two), else "". Packed evidence's gap marks end a sentence:
    the pieces they join are not adjacent."""
    pieces = [split_sentences(p) for p in cited_text.split(GAP.strip())]
    for units in ([s for p in pieces for s in p], [a + b for p in pieces for a, b in zip(p, p[1:], strict=False)]):
        share, closest = max(((lexical_support(sentence, u), u) for u in units), default=(0.0, ""))
        if share >= COPIES:
            return closest
    return ""


def _translation_holds(sentence: str, cited_text: str) -> bool:
    """Whether an English claim about a Chinese source shares TRANSLATED_FLOOR of its words with it
    (rag.lexicon); a bare claim, one without such words or a Chinese one is left to the cosine."""
    if is_bare(sentence) or language(strip_markers(sentence)) != "en":
        return True
    overlap = translated_overlap(strip_markers(sentence), cited_text)
    return overlap is None or overlap >= TRANSLATED_FLOOR


def is_bare(sentence: str) -> bool:
    """A claim of a few characters: the answer alone, its subject left to the question."""
    return len(WORD_CHAR.findall(strip_markers(sentence))) <= SHORT_CLAIM_CHARS


def words_comparable(sentence: str, cited_text: str) -> bool:
    """Whether lexical overlap can judge `sentence`: long enough to overlap, and written in a script its
    source uses (a Chinese sentence and a source with Chinese in it, even a list of English headings
    with "篇" after each; an English sentence and an English source)."""
    claim = strip_markers(sentence)
    if is_bare(claim):
        return False
    cjk, latin = script_counts(cited_text)
    return bool(cjk) if language(claim) == "zh" else language_of_counts(cjk, latin) == "en"


def support_check(answer_text: str, sources: Sequence[Source], *,
                  embed: Callable[[list[str]], Sequence[Sequence[float]]] | None = None,
                  question: str = "",
                  threshold: float = SUPPORT_THRESHOLD,
                  cosine_threshold: float = COSINE_THRESHOLD) -> list[SentenceSupport]:
    """Per sentence: its citations, lexical (and optional embedding) support, missing facts and a status.

    Facts the question itself names are not invented by repeating them. An uncited sentence is
    "uncited" when the sources together support it, else "unsupported" too: a model that drops the
    marker must not slip an invented figure, or invented steps, past the check.
    """
    stated = {s.n: statements(s.text) for s in sources}
    labels = {s.n: source_labels(s) for s in sources}
    everything = "\n".join(stated.values())
    sentences = split_sentences(answer_text)
    cited = [tuple(n for n in dict.fromkeys(marker_numbers(s)) if n in stated) for s in sentences]
    cos = None
    if embed is not None and sources and sentences:
        order = list(stated)
        cos = cosines([strip_markers(s) for s in sentences], list(stated.values()), embed)
    out = []
    for i, (sentence, numbers) in enumerate(zip(sentences, cited, strict=True)):
        if is_question(sentence):  # a question in the answer states nothing
            out.append(SentenceSupport(sentence, numbers, 0.0, None, "unsupported" if numbers else "uncited",
                                       ("question",)))
            continue
        if not numbers:
            any_cos = float(cos[i].max()) if cos is not None else None
            lexical, missing, ok = judge_sentence(sentence, everything, any_cos, known=question,
                                                  threshold=threshold, cosine_threshold=cosine_threshold,
                                                  named_in=_contributors(sentence, stated, labels))
            out.append(SentenceSupport(sentence, (), round(lexical, 3), any_cos, "uncited" if ok else "unsupported",
                                       tuple(missing)))
            continue
        cited_text = "\n".join(stated[n] for n in numbers)
        best_cos = float(max(cos[i, order.index(n)] for n in numbers)) if cos is not None else None
        lexical, missing, ok = judge_sentence(sentence, cited_text, best_cos, known=question,
                                              labels="\n".join(labels[n] for n in numbers), threshold=threshold,
                                              cosine_threshold=cosine_threshold)
        out.append(SentenceSupport(sentence, numbers, round(lexical, 3), best_cos,
                                   "supported" if ok else "unsupported", tuple(missing)))
    return out


def _contributors(sentence: str, stated: dict[int, str], labels: dict[int, str]) -> str:
    """What the sources an uncited sentence draws on state, with their labels: where the question's subjects
    must be named. Judged against all sources together, "SentencePiece分词的基本思路是通过组合已知的子词
    单元…" passed: its words came from a passage about BPE, "SentencePiece" from a table of contents
    ("• [x] SentencePiece 篇"). A source contributes when it holds CONTRIBUTES of the sentence's words; where
    words cannot be compared (another language) every source counts."""
    everything = "\n".join(stated.values())
    if not words_comparable(sentence, everything):
        return everything + "\n" + "\n".join(labels.values())
    return "\n".join(f"{stated[n]}\n{labels[n]}" for n in stated if lexical_support(sentence, stated[n]) >= CONTRIBUTES)
