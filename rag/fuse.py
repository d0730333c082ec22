"""Fusion of ranked lists: pure functions from ranked rows to fused scores."""

from __future__ import annotations

from collections.abc import Callable


def rrf(rankings: list[list[int]], *, k: int = 60, weights: list[float] | None = None) -> dict[int, float]:
    """Reciprocal-rank fusion: sum over lists of weight / (k + rank), ranks 1-based."""
    weights = weights or [1.0] * len(rankings)
    fused: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights):
        for rank, row in enumerate(ranking, start=1):
            fused[row] = fused.get(row, 0.0) + weight / (k + rank)
    return fused


def minmax(scores: dict[int, float]) -> dict[int, float]:
    """Scale scores to [0, 1] (all-equal scores map to 1)."""
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    span = hi - lo
    return {row: (s - lo) / span if span > 0 else 1.0 for row, s in scores.items()}


def weighted(score_lists: list[dict[int, float]], weights: list[float],
             normalize: Callable[[dict[int, float]], dict[int, float]] = minmax) -> dict[int, float]:
    """Weighted sum of normalized scores (min-max by default); a row missing from a list gets 0 there."""
    fused: dict[int, float] = {}
    for scores, weight in zip(score_lists, weights):
        for row, s in normalize(scores).items():
            fused[row] = fused.get(row, 0.0) + weight * s
    return fused


def ranked(fused: dict[int, float]) -> list[tuple[int, float]]:
    """(row, score) best first, ties broken by row for determinism."""
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


def hybrid(dense: list[tuple[int, float]], sparse: list[tuple[int, float]], query: str, settings) -> dict[int, float]:
    """The configured fusion of one query's dense and BM25 rankings (settings.fusion, dense_weight, rrf_k)."""
    if settings.fusion == "rrf":
        return rrf([[r for r, _ in dense], [r for r, _ in sparse]], k=settings.rrf_k)
    return weighted([dict(dense), dict(sparse)], [settings.dense_weight, 1 - settings.dense_weight])
