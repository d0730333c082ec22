"""Retrieval metrics per mode: hit@k, MRR@10, nDCG@10, recall@100, latency."""

from __future__ import annotations

import math
import time

import numpy as np
from tqdm import tqdm

from rag.eval.qa import QAItem, RelevanceJudge
from rag.records import Hit
from rag.rerank import rerank
from rag.retrieve import with_history

CUTOFFS = (1, 3, 5, 10)
DEPTH = 100


def doc_level(hits: list[Hit]) -> list[Hit]:
    """Keep the best-ranked hit of each document (BEIR judges documents, not chunks)."""
    seen, out = set(), []
    for hit in hits:
        if hit.chunk.doc_id not in seen:
            seen.add(hit.chunk.doc_id)
            out.append(hit)
    return out


def ndcg(gains: list[float], ideal: list[float], k: int = 10) -> float:
    """nDCG@k from the gains in ranked order and the best possible gains."""
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains[:k]))
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(ideal, reverse=True)[:k]))
    return dcg / idcg if idcg > 0 else 0.0


def judge_hits(item: QAItem, hits: list[Hit], judge: RelevanceJudge, qrels: dict[str, int] | None) -> tuple[list[float], list[float]]:
    """(gains in rank order, ideal gains) for one question."""
    if qrels is not None:  # graded document judgements (BEIR)
        return [float(qrels.get(h.chunk.doc_id, 0)) for h in hits], [float(g) for g in qrels.values() if g > 0]
    gains = [1.0 if judge.relevant(item, h.chunk) else 0.0 for h in hits]
    return gains, gains  # ideal: the relevant chunks that were retrieved (pooled judgement)


def question_metrics(gains: list[float], ideal: list[float], n_relevant: int) -> dict:
    """Metrics of one ranked list."""
    first = next((i + 1 for i, g in enumerate(gains) if g > 0), None)
    row = {f"hit@{k}": float(first is not None and first <= k) for k in CUTOFFS}
    row["mrr@10"] = 1.0 / first if first and first <= 10 else 0.0
    row["ndcg@10"] = ndcg(gains, ideal)
    row["recall@100"] = min(1.0, sum(g > 0 for g in gains[:DEPTH]) / n_relevant) if n_relevant else 0.0
    row["first_relevant"] = first
    return row


def evaluate_mode(retriever, items: list[QAItem], mode: str, judge: RelevanceJudge, qrels: dict | None, reranker=None,
                  progress: bool = True, queries: dict[str, str] | None = None) -> tuple[dict, list[dict]]:
    """Run every answerable question through one mode; (summary, per-question rows). `queries` maps
    question ids to prepared search queries (e.g. with a translation); else the question plus history.

    hit@k, MRR@10 and nDCG@10 score the list the app ranks: each channel `candidates` deep, as a question is
    searched (a deeper search fuses other min-max scores and re-scores another top). recall@100, and the ideal
    gains of a QA set's pooled judgement, come from a second, deeper search (300 chunks for BEIR sets)."""
    rows, latencies = [], []
    base_mode = "hybrid" if mode == "rerank" else mode
    for item in tqdm(items, desc=mode, disable=not progress):
        if not item.answerable:
            continue
        t = time.perf_counter()
        query = queries[item.id] if queries else with_history(item.question, item.history)
        hits = retriever.search(query, mode=base_mode, k=retriever.settings.candidates)
        if mode == "rerank":
            n = retriever.settings.rerank_candidates
            hits = rerank(reranker, query, hits[:n]) + hits[n:]
        latencies.append((time.perf_counter() - t) * 1000)
        deep = retriever.search(query, mode=base_mode, k=DEPTH * 3 if qrels is not None else DEPTH)
        if qrels is not None:
            hits, deep = doc_level(hits), doc_level(deep)
        item_qrels = qrels.get(item.id, {}) if qrels is not None else None
        gains, _ = judge_hits(item, hits, judge, item_qrels)
        deep_gains, ideal = judge_hits(item, deep, judge, item_qrels)
        if item_qrels is None:  # pooled: every relevant chunk either search found
            ideal = [1.0] * len({h.chunk.id for h, g in [*zip(hits, gains), *zip(deep, deep_gains)] if g > 0})
        n_relevant = len([g for g in ideal if g > 0]) if item_qrels is not None else max(1, sum(g > 0 for g in ideal))
        row = question_metrics(gains, ideal, n_relevant)
        row["recall@100"] = question_metrics(deep_gains, ideal, n_relevant)["recall@100"]
        row.update(id=item.id, mode=mode, top=[h.chunk.id for h in hits[:10]], top_docs=[h.chunk.doc_id for h in hits[:10]])
        if queries:
            row["query"] = query
        rows.append(row)
    keys = [f"hit@{k}" for k in CUTOFFS] + ["mrr@10", "ndcg@10", "recall@100"]
    summary = {k: round(float(np.mean([r[k] for r in rows])), 4) if rows else 0.0 for k in keys}
    summary["latency_ms_p50"] = round(float(np.percentile(latencies, 50)), 2) if latencies else 0.0
    summary["latency_ms_p95"] = round(float(np.percentile(latencies, 95)), 2) if latencies else 0.0
    summary["n"] = len(rows)
    return summary, rows


def format_table(modes: dict[str, dict]) -> str:
    """A readable fixed-width table of the summaries."""
    keys = ["hit@1", "hit@3", "hit@5", "hit@10", "mrr@10", "ndcg@10", "recall@100", "latency_ms_p50", "latency_ms_p95"]
    head = f"{'mode':<8}" + "".join(f"{k.replace('latency_ms_', 'ms '):>11}" for k in keys)
    lines = [head, "-" * len(head)]
    for mode, summary in modes.items():
        lines.append(f"{mode:<8}" + "".join(f"{summary.get(k, 0):>11.3f}" if "latency" not in k else f"{summary.get(k, 0):>11.1f}" for k in keys))
    return "\n".join(lines)
