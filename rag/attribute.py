"""Citation attribution: each sentence of the model's answer gets the marker of the source that supports it.

Small models often answer from the sources without writing `[n]`, or write the wrong number; a marker is added,
moved or dropped only where rag.cite's support judgement says so, so every citation written is checkable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rag.cite import (
    COSINE_THRESHOLD,
    SUPPORT_THRESHOLD,
    cosines,
    is_bare,
    judge_sentence,
    marker_numbers,
    source_labels,
    split_sentences,
    statements,
    strip_markers,
    words_comparable,
)
from rag.lexicon import translated_overlap
from rag.prompt import Source
from rag.text import is_question, language

# An English sentence citing Chinese sources moves to the source whose words it restates (rag.lexicon)
# when that one holds this much more of its words than every source it cites. Session 21's dev run: 5 of the
# 6 English sentences that cited another source than the one they translate lay 0.28-0.89 behind it (the
# sixth 0.16); the closest correct citation the other way, 0.23 (zh-019).
TRANSLATED_MARGIN = 0.25


def attribute_citations(answer_text: str, sources: Sequence[Source], *,
                        embed: Callable[[list[str]], Sequence[Sequence[float]]] | None = None,
                        question: str = "",
                        threshold: float = SUPPORT_THRESHOLD,
                        cosine_threshold: float = COSINE_THRESHOLD) -> tuple[str, int]:
    """Give each sentence that none of its cited sources supports the marker of the source that does,
    and drop the co-cited markers of a sentence that one of its sources supports alone.

    Small models often answer from the sources without writing `[n]`, or write the wrong number (the
    sentence is in [1], the marker says [2]). A marker is added or moved only where that source passes
    the support check for the sentence (`judge_sentence` on what the source states: no missing number
    or name, and enough lexical overlap or, with `embed`, embedding cosine - which works across
    languages; facts the question names need not be in the source, as in `support_check`), so every
    citation it writes is one the reader can check. A sentence no source supports keeps what it had (the
    support check then judges it). Returns (text, sentences whose markers were added, moved or dropped).
    """
    sentences = [s for s in split_sentences(answer_text) if not is_question(s)]
    if not sentences or not sources:
        return answer_text, 0
    stated = [statements(s.text) for s in sources]
    labels = [source_labels(s) for s in sources]
    numbers = [s.n for s in sources]
    cos = cosines([strip_markers(s) for s in sentences], stated, embed) if embed else None
    best: dict[str, list[int]] = {}  # sentence -> the markers it gets
    for i, sentence in enumerate(sentences):
        def verdict(j: int, sentence: str = sentence, i: int = i) -> tuple[bool, float, int]:
            c = float(cos[i, j]) if cos is not None else None
            lexical, _, ok = judge_sentence(sentence, stated[j], c, known=question, labels=labels[j], threshold=threshold,
                                            cosine_threshold=cosine_threshold)
            return ok, max(lexical, c or 0.0), numbers[j]

        cited = [numbers.index(n) for n in dict.fromkeys(marker_numbers(sentence)) if n in numbers]
        if cited and _cited_support(sentence, [stated[j] for j in cited], "\n".join(labels[j] for j in cited),
                                    [float(cos[i, j]) for j in cited] if cos is not None else None,
                                    question, threshold, cosine_threshold):
            alone = [numbers[j] for j in cited if verdict(j)[0]] if len(cited) > 1 else []
            # "…事实。[1][2]" where [1] alone says it: [2] goes
            markers = alone if 0 < len(alone) < len(cited) else None
        else:
            ok, _, n = max(verdict(j) for j in range(len(sources)))
            if not ok:
                continue
            markers, cited = [n], [numbers.index(n)]
        restating = _restating_source(sentence, stated, cited)  # the words may point elsewhere than the cosine
        if restating is not None and verdict(restating)[0]:
            markers = [numbers[restating]]
        if markers is not None:
            best[sentence] = markers
    out, cursor, changed = [], 0, 0
    for sentence in split_sentences(answer_text):
        at = answer_text.find(sentence, cursor)
        if at < 0:
            continue
        out.append(answer_text[cursor:at])
        cursor = at + len(sentence)
        if sentence in best:
            out.append(strip_markers(sentence).rstrip() + "".join(f"[{n}]" for n in best[sentence]))
            changed += 1
        else:
            out.append(sentence)
    out.append(answer_text[cursor:])
    return "".join(out), changed


def _restating_source(sentence: str, stated: list[str], cited: list[int]) -> int | None:
    """For an English sentence citing Chinese sources: the source that holds TRANSLATED_MARGIN
    more of its words (as they are or translated) than any cited one, if there is one. The embedding cosine
    cannot tell them apart: "Fine-tuning is a supervised learning process.[2]" cited "SFT(监督微调,
    Supervised Fine-Tuning) …" (cosine 0.839) rather than "微调的本质是一个有监督学习过程" (0.808)."""
    claim = strip_markers(sentence)
    if is_bare(claim) or language(claim) != "en" or words_comparable(claim, "\n".join(stated[j] for j in cited)):
        return None
    overlap = [translated_overlap(claim, text) or 0.0 for text in stated]
    best = max(range(len(stated)), key=overlap.__getitem__)
    if best in cited or overlap[best] < max(overlap[j] for j in cited) + TRANSLATED_MARGIN:
        return None
    return best


def _cited_support(sentence: str, texts: list[str], labels: str, cosines: list[float] | None, question: str, threshold: float,
                   cosine_threshold: float) -> bool:
    """Whether the sources a sentence cites, together, support it (as `support_check` judges it)."""
    best_cos = max(cosines) if cosines else None
    return judge_sentence(sentence, "\n".join(texts), best_cos, known=question, labels=labels, threshold=threshold,
                          cosine_threshold=cosine_threshold)[2]
