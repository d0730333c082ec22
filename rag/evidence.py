"""Evidence selection: the sentences of the top chunks that best answer the question, in a small budget.

The LLM reads prompts slowly on a CPU (tens of tokens a second), so the answer prompt carries the
few sentences that matter instead of whole chunks. Every sentence is cut from the cleaned document
text itself, so each packed piece keeps its exact document offsets and a citation `[n]` can mark
the very sentences the model read.

Score of a sentence = e5 cosine(question, sentence) + RANK_WEIGHT / retrieval rank of its chunk, where the
HEADED_SENTENCES best sentences are also read under their heading and keep the higher cosine: a
sentence often leaves its subject to its heading ("优点:可以建立全局的依赖关系" under "自注意力机制"; a
CMRC2018 paragraph under its article's title).
A picked sentence brings along, within the budget, the sentences it hands over to (`followers`): a lead-in
("可以采取以下方法:") its first item, also past a summary that a scraped page put between them, an item its
"这可能包括…" elaboration, where the answer often is.
The weight, the heading, the followers and the default budget were chosen by how many reference key phrases the packed
evidence holds (`python -m bench.evidence`, README); an idf-weighted term-overlap term was measured too
and lowered that share (0.858 -> 0.835 at 320 tokens), so it is not used.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from rag.facts import CHECKLIST_ITEM, LIST_NUMBER
from rag.llm import estimate_tokens
from rag.prompt import Source, document_title, group_hits
from rag.records import Chunk, Hit
from rag.text import WORD_CHAR, is_question, sentence_spans

RANK_WEIGHT = 0.05
HEADED_SENTENCES = 12  # the best sentences (read alone) also read under their heading (README: measured)
MAX_SENTENCE_CHARS = 200  # longer "sentences" (lists without punctuation) are cut at commas
MIN_WORD_CHARS = 4  # pieces with fewer letters/ideographs ("注:", "1.") are not evidence
GAP = " … "  # between two packed pieces that are not adjacent in the document
ANSWER_LOOKAHEAD = 400  # characters after a question searched for the sentence that follows it
_CLAUSE_END = re.compile(r"[，,、：:]\s*")
# A sentence that hands over to the next one: a lead-in ("可以采取以下方法:"), one item of an enumeration
# cut at ";" ("(1)非线性激活:…;"), or the next one opens by pointing back ("这可能包括去除敏感信息、…").
_LEADS_IN = re.compile(r"[：:;；]\s*$")
_POINTS_BACK = re.compile(r"\s*(?:这|此|该|其|它|例如|比如|譬如|即|尤其|具体|包括|也就是)")
MAX_FOLLOWERS = 2  # sentences a picked sentence may bring along that way
# A list's first item ("1.", "1、", "(1)"): a lead-in ending in ":" hands over to it even when up to
# DISPLACED_LIST_SENTENCES statements stand between (scraped pages often put the closing summary first).
_FIRST_ITEM = re.compile(r"\s*(?:[(（]1[)）]|1[.、)])")
_ANNOUNCES = re.compile(r"[：:]\s*$")
DISPLACED_LIST_SENTENCES = 3


@dataclass(frozen=True)
class Sentence:
    """One candidate piece of evidence: a sentence of a retrieved chunk, with document offsets."""

    doc_id: str
    start: int
    end: int
    text: str
    group: int  # which group of touching retrieved chunks it came from
    rank: int  # 1-based retrieval rank of that group's best chunk
    score: float = 0.0
    cosine: float = 0.0
    header: Sentence | None = None  # a table row's header row: scored with the row, packed before it
    asks: bool = False  # a question that no statement follows: scored, never packed (candidate_sentences)
    heading: str = ""  # the heading it may be read under (candidate_sentences; "" when none)
    follower: Sentence | None = None  # the next sentence, when this one hands over to it (_with_followers)


@dataclass(frozen=True)
class Evidence:
    """The packed sources and the scored sentences behind them."""

    sources: list[Source]
    picked: list[Sentence]  # best first
    candidates: int  # sentences scored
    # How much closer to the question the best question sentence of the retrieved text is than the best
    # statement (None when the text asks nothing): the notes list the question but do not answer it.
    asked_margin: float | None = None

    @property
    def top_score(self) -> float:
        """Score of the best sentence (0 when nothing was found)."""
        return self.picked[0].score if self.picked else 0.0

    @property
    def top_cosine(self) -> float:
        """Best question-sentence cosine among the picked sentences."""
        return max((s.cosine for s in self.picked), default=0.0)


def _split_long(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Cut an over-long span at clause ends (commas, colons) into pieces of at most MAX_SENTENCE_CHARS."""
    if end - start <= MAX_SENTENCE_CHARS:
        return [(start, end)]
    pieces, at = [], start
    while end - at > MAX_SENTENCE_CHARS:
        window = text[at: at + MAX_SENTENCE_CHARS]
        cuts = [m.end() for m in _CLAUSE_END.finditer(window) if m.end() > MAX_SENTENCE_CHARS // 3]
        cut = at + (cuts[-1] if cuts else MAX_SENTENCE_CHARS)
        pieces.append((at, cut))
        at = cut
    pieces.append((at, end))
    return [(s, e) for s, e in ((s, e - (len(text[s:e]) - len(text[s:e].rstrip()))) for s, e in pieces) if e > s]


def _is_heading(text: str, headings: set[str]) -> bool:
    """A Markdown heading line, or a line that is one of the chunk's headings (already in the source label)."""
    return text.startswith("#") or text.strip(" #") in headings


def _answered(doc_text: str, end: int) -> bool:
    """Whether the sentence after a question (ending at `end`) states something: an FAQ's answer, not the next
    item of a checklist ("• [x] Layer normalization-方法篇"), a heading, another question or the end."""
    window = doc_text[end: end + ANSWER_LOOKAHEAD]
    following = next((window[a:b] for a, b in sentence_spans(window)), "")
    return bool(following) and not (following.startswith("#") or is_question(following) or CHECKLIST_ITEM.match(following))


def candidate_sentences(hits: Sequence[Hit], documents: dict, *, questions: bool = False) -> list[Sentence]:
    """The sentences of the hits' chunks, cut from the document text; touching chunks share theirs.

    Headings are left out (each source is labelled with its heading path), and so are questions (notes are
    full of questions with no answer under them, a checklist of interview questions: read as evidence, they
    invite the model to invent the answer they lack), unless `questions`: then the questions that no
    statement follows are kept, marked `asks` (an FAQ's question, answered by the next line, is not); a table
    row carries its table's header row, so that "| P0 | ... | 15 分钟内 |" is read under "| 等级 | ... | 响应时间 |".
    """
    out: list[Sentence] = []
    paths: list[tuple[str, ...]] = []  # the heading path of each sentence in `out`
    for group, (rank, chunks) in enumerate(group_hits(hits)):
        doc_id = chunks[0].doc_id
        doc = documents.get(doc_id)
        if doc is None:
            continue
        lo, hi = min(c.start for c in chunks), max(c.end for c in chunks)
        region = doc.text[lo:hi]
        headings = {h.strip(" #") for c in chunks for h in c.heading_path}
        header: Sentence | None = None
        for s, e in sentence_spans(region):
            text = region[s:e]
            if not text.startswith("|"):
                header = None
            elif header is None:  # first row of a table
                header = Sentence(doc_id, lo + s, lo + e, text, group, rank)
                continue
            asks = is_question(text)
            if _is_heading(text, headings) or (asks and not (questions and not _answered(doc.text, lo + e))):
                continue
            path = _path_at(chunks, lo + s)
            for a, b in _split_long(region, s, e):
                piece = region[a:b]
                if len(WORD_CHAR.findall(piece)) >= MIN_WORD_CHARS:
                    out.append(Sentence(doc_id, lo + a, lo + b, piece, group, rank, header=header, asks=asks))
                    paths.append(path)
    return _with_followers(_with_headings(out, paths), documents)


def _with_followers(sentences: list[Sentence], documents: dict) -> list[Sentence]:
    """Each sentence with the sentence after it when it hands over to it (`_LEADS_IN`, `_POINTS_BACK`) and
    nothing but space and a list number lies between; a chain of at most MAX_FOLLOWERS. Packed together:
    the details a lead-in announces, or a "这…" sentence, are where the answer often is (zh-090: "1. 数据清理
    和预处理:…以确保数据符合合规要求。" is picked, "这可能包括去除敏感信息、匿名化处理、数据脱敏等操作。" holds the answer)."""
    out = list(sentences)
    for i in range(len(out) - 1, -1, -1):  # from the end, so a follower already carries its own follower
        s, nxt = out[i], out[i + 1] if i + 1 < len(out) else None
        if nxt is None or nxt.group != s.group or nxt.doc_id != s.doc_id or nxt.header or s.header:
            continue
        between = documents[s.doc_id].text[s.end:nxt.start]
        if LIST_NUMBER.sub("", between).strip():
            continue
        item = _displaced_first_item(out, i, documents) if _ANNOUNCES.search(s.text) else None
        if item is not None:
            out[i] = replace(s, follower=out[item])
        elif _LEADS_IN.search(s.text) or _POINTS_BACK.match(nxt.text):
            out[i] = replace(s, follower=nxt)
    return out


def _displaced_first_item(sentences: list[Sentence], i: int, documents: dict) -> int | None:
    """Index of the first item of the list that the lead-in `sentences[i]` announces, when one to
    DISPLACED_LIST_SENTENCES statements of the same passage stand between them ("PEFT的关键步骤包括:" - "通过PEFT,
    …" - "1. 数据采样:…"); None when the next sentence is the item itself or something else comes first
    (a heading or a question, which are no candidates, or another list)."""
    s = sentences[i]
    doc = documents[s.doc_id].text
    for j in range(i + 1, min(i + 2 + DISPLACED_LIST_SENTENCES, len(sentences))):
        prev, cur = sentences[j - 1], sentences[j]
        between = doc[prev.end:cur.start]
        if cur.group != s.group or cur.header or LIST_NUMBER.sub("", between).strip():
            return None
        opening = between + cur.text  # a list number may end the gap or open the sentence
        if _FIRST_ITEM.match(opening):
            return j if j > i + 1 else None
        if LIST_NUMBER.match(opening):  # the next sentence, or one between, is an item of another list
            return None
    return None


def followers(s: Sentence) -> list[Sentence]:
    """The sentences `s` brings along (at most MAX_FOLLOWERS), in document order."""
    out, f = [], s.follower
    while f is not None and len(out) < MAX_FOLLOWERS:
        out.append(f)
        f = f.follower
    return out


def _path_at(chunks: Sequence[Chunk], offset: int) -> tuple[str, ...]:
    """The heading path of the chunk that holds document offset `offset`, outermost first."""
    holder = next((c for c in chunks if c.start <= offset < c.end), chunks[0])
    return tuple(h.strip(" #") for h in holder.heading_path)


def _with_headings(sentences: list[Sentence], paths: list[tuple[str, ...]]) -> list[Sentence]:
    """Each sentence with the heading it may be read under: its innermost one; a document's title (a path of
    one) only where none of the document's sentences here sits in a section - in a manual with sections the
    title would lift its opening lines ("本手册说明如何部署「知库 DocQA」") over the section that answers."""
    sectioned = {s.doc_id for s, path in zip(sentences, paths, strict=True) if len(path) > 1}
    return [replace(s, heading=path[-1]) if path and (len(path) > 1 or s.doc_id not in sectioned) else s
            for s, path in zip(sentences, paths, strict=True)]


def score_sentences(query: str, sentences: list[Sentence], embedder) -> list[Sentence]:
    """Each sentence with its cosine to the query (read alone: `cosine`) and its combined score (the better
    of alone and under its heading, + the rank weight)."""
    if not sentences:
        return []
    q = embedder.encode_queries([query])[0]
    read = [f"{s.header.text}\n{s.text}" if s.header else s.text for s in sentences]
    alone = embedder.encode_passages_cached(read) @ q
    prior = np.array([RANK_WEIGHT / s.rank for s in sentences])
    under = alone.copy()
    # only the best read alone are read again under their heading: most of the gain for a fraction of the time
    again = [int(i) for i in np.argsort(-(alone + prior), kind="stable")[:HEADED_SENTENCES]
             if sentences[i].heading and sentences[i].heading not in read[i]]
    if again:
        under[again] = embedder.encode_passages_cached([f"{sentences[i].heading}\n{read[i]}" for i in again]) @ q
    return [replace(s, score=float(max(a, u) + w), cosine=float(a))
            for s, a, u, w in zip(sentences, alone, under, prior, strict=True)]


def pack(scored: list[Sentence], hits: Sequence[Hit], documents: dict, budget_tokens: int, *,
         follow: bool = True) -> Evidence:
    """The best sentences within `budget_tokens` (estimated), one source per chunk group, best group first;
    with `follow`, each with the sentences it hands over to (`followers`), as far as the budget allows."""
    if budget_tokens <= 0:
        raise ValueError(f"evidence budget must be > 0 tokens, got {budget_tokens}")
    ranked = sorted(scored, key=lambda s: -s.score)
    picked, used, packed, brought = [], 0, set(), []
    for s in ranked:
        if (s.doc_id, s.start) in packed:  # brought along by an earlier pick
            continue
        header = s.header if s.header and (s.doc_id, s.header.start) not in packed else None
        cost = estimate_tokens(s.text) + 1 + (estimate_tokens(header.text) + 1 if header else 0)
        if used + cost > budget_tokens and picked:
            continue
        used += cost
        more = []  # its followers, in order, as long as each fits
        for f in followers(s) if follow else ():
            extra = estimate_tokens(f.text) + 1
            if (f.doc_id, f.start) in packed or used + extra > budget_tokens:
                break
            more.append(f)
            used += extra
        picked.append(s)
        brought.extend(more)
        for piece in (s, *([header] if header else ()), *more):
            packed.add((s.doc_id, piece.start))
    groups = group_hits(hits)
    by_group: dict[int, list[Sentence]] = {}
    for s in [*picked, *brought]:  # best first, so groups come out in order of their best sentence
        by_group.setdefault(s.group, []).append(s)
    sources = []
    for n, (group, sentences) in enumerate(by_group.items(), start=1):
        headers = {s.header.start: s.header for s in sentences if s.header}
        sentences = sorted([*sentences, *(h for h in headers.values() if h.start not in {s.start for s in sentences})],
                           key=lambda s: s.start)
        doc = documents[sentences[0].doc_id]
        text = sentences[0].text
        for prev, cur in zip(sentences, sentences[1:], strict=False):
            between = doc.text[prev.end:cur.start]
            # adjacent: keep the whitespace between; only punctuation between (a table's "| --- |"): a newline
            text += (between if not between.strip() else "\n" if not WORD_CHAR.search(between) else GAP) + cur.text
        chunks = tuple(sorted(groups[group][1], key=lambda c: (c.start, c.end)))
        lo, hi = min(c.start for c in chunks), max(c.end for c in chunks)
        first = chunks[0]
        context = Chunk(id="+".join(c.id for c in chunks), doc_id=first.doc_id, text=doc.text[lo:hi],
                        source=first.source, heading_path=first.heading_path, start=lo, end=hi)
        sources.append(Source(n, chunks, document_title(first), first.heading, text, groups[group][0],
                              pieces=tuple((s.start, s.end) for s in sentences), context=context))
    return Evidence(sources, picked, len(scored))


def select_evidence(query: str, hits: Sequence[Hit], *, documents: dict, embedder, budget_tokens: int) -> Evidence:
    """Score the sentences of `hits` against `query` and pack the best statements into `budget_tokens`.

    The text's questions are scored too, never packed: `asked_margin` says how much better the best of
    them matches than the best statement (a checklist item "3. 涌现能力是啥原因?" matching the question
    more closely than anything the notes state about it).
    """
    scored = score_sentences(query, candidate_sentences(hits, documents, questions=True), embedder)
    asked = [s.cosine for s in scored if s.asks]
    stated = [s for s in scored if not s.asks]
    evidence = pack(stated, hits, documents, budget_tokens)
    if not asked:
        return evidence
    return replace(evidence, asked_margin=max(asked) - max((s.cosine for s in stated), default=0.0))
