"""Cached per-question rankings of both channels, with every candidate already judged.

A fusion or reranking study then needs no model and no index: each question carries its dense and
BM25 lists (key, score), the relevance gain, document id and chunk prior of every key in them, and
the ideal gains. Files live under eval-out/rankings/ (not in git), one JSON per set.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

CACHE = Path("eval-out/rankings")
DEPTH = 100


@dataclass
class Question:
    """One question's two rankings and the judgements needed to score any fusion of them."""

    id: str
    query: str
    dense: list[tuple[str, float]]
    bm25: list[tuple[str, float]]
    gain: dict[str, float]  # key -> relevance gain (0 for irrelevant)
    doc: dict[str, str]  # key -> document id (BEIR judges documents: the best chunk of each counts)
    prior: dict[str, float]  # key -> chunk prior (tables of contents, stray titles)
    ideal: list[float] = field(default_factory=list)  # BEIR: the judged gains; QA sets: pooled from the lists
    text: dict[str, str] = field(default_factory=dict)  # key -> chunk text (kept for reranking studies)


@dataclass
class RankingSet:
    """The questions of one evaluation set; `doc_level` when relevance is judged per document."""

    name: str
    doc_level: bool
    questions: list[Question]


def save(ranking_set: RankingSet, path: Path) -> None:
    """Write a set as plain JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"name": ranking_set.name, "doc_level": ranking_set.doc_level,
            "questions": [q.__dict__ for q in ranking_set.questions]}
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def load(path: Path) -> RankingSet:
    """Read a set written by `save`."""
    data = json.loads(path.read_text(encoding="utf-8"))
    questions = []
    for q in data["questions"]:
        q["dense"] = [tuple(p) for p in q["dense"]]
        q["bm25"] = [tuple(p) for p in q["bm25"]]
        questions.append(Question(**q))
    return RankingSet(data["name"], data["doc_level"], questions)


def collect(name: str, retriever, items, qrels: dict | None, *, progress: bool = True) -> RankingSet:
    """Run both channels once per question (depth 100) and judge every candidate."""
    from rag.eval.qa import RelevanceJudge
    from rag.retrieve import with_history

    judge = RelevanceJudge({d: r.text for d, r in retriever.state.documents.items()})
    questions = []
    for item in tqdm(items, desc=name, disable=not progress):
        if not item.answerable:
            continue
        query = with_history(item.question, item.history)
        dense = retriever.dense_ranking(query, DEPTH)
        bm25 = retriever.bm25_ranking(query, DEPTH)
        keys = list(dict.fromkeys([k for k, _ in dense] + [k for k, _ in bm25]))
        chunks = retriever.state.chunks(keys)
        item_qrels = qrels.get(item.id, {}) if qrels is not None else None
        if item_qrels is not None:
            gain = {k: float(item_qrels.get(c.doc_id, 0)) for k, c in zip(keys, chunks)}
            ideal = [float(g) for g in item_qrels.values() if g > 0]
        else:
            gain = {k: float(judge.relevant(item, c)) for k, c in zip(keys, chunks)}
            ideal = []
        questions.append(Question(
            id=item.id, query=query, dense=[(k, float(s)) for k, s in dense], bm25=[(k, float(s)) for k, s in bm25],
            gain=gain, doc={k: c.doc_id for k, c in zip(keys, chunks)}, prior=retriever.state.priors(keys),
            ideal=ideal, text={k: c.text for k, c in zip(keys, chunks)},
        ))
    return RankingSet(name, qrels is not None, questions)


def metrics(ranking_set: RankingSet, question: Question, ranked_keys: list[str]) -> dict[str, float]:
    """hit@1, MRR@10, nDCG@10 and recall@100 of one fused list (document level for BEIR sets)."""
    if ranking_set.doc_level:
        seen, keys = set(), []
        for key in ranked_keys:
            if question.doc[key] not in seen:
                seen.add(question.doc[key])
                keys.append(key)
    else:
        keys = ranked_keys
    gains = [question.gain.get(k, 0.0) for k in keys]
    ideal = question.ideal if ranking_set.doc_level else [g for g in question.gain.values() if g > 0]
    first = next((i + 1 for i, g in enumerate(gains) if g > 0), None)
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains[:10]))
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(ideal, reverse=True)[:10]))
    n_relevant = len([g for g in ideal if g > 0]) or 1
    return {
        "hit@1": float(first == 1),
        "mrr@10": 1.0 / first if first and first <= 10 else 0.0,
        "ndcg@10": dcg / idcg if idcg > 0 else 0.0,
        "recall@100": min(1.0, sum(g > 0 for g in gains[:100]) / n_relevant),
    }


def with_dense(ranking_set: RankingSet, name: str, dense: dict[str, list], store, qrels: dict) -> RankingSet:
    """The same questions and BM25 lists with another dense channel's lists (BEIR sets: judged by qrels)."""
    questions = []
    for q in ranking_set.questions:
        ranking = [(k, float(s)) for k, s in dense[q.id]]
        new = [k for k, _ in ranking if k not in q.gain]
        chunks = store.chunks(new)
        item_qrels = qrels.get(q.id, {})
        questions.append(Question(
            id=q.id, query=q.query, dense=ranking, bm25=q.bm25,
            gain={**q.gain, **{k: float(item_qrels.get(c.doc_id, 0)) for k, c in zip(new, chunks)}},
            doc={**q.doc, **{k: c.doc_id for k, c in zip(new, chunks)}},
            prior={**q.prior, **store.priors(new)}, ideal=q.ideal,
            text={**q.text, **{k: c.text for k, c in zip(new, chunks)}},
        ))
    return RankingSet(name, ranking_set.doc_level, questions)
