"""The BM25 term table of a Milvus knowledge base: term ids, document frequencies and lengths, from which rows
get their sparse BM25 weights and queries their idf (rag.bm25's formulas, so both backends rank alike)."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from rag.bm25 import BM25Params, idf, length_norm, term_weight

REWEIGHT_DRIFT = 0.05  # re-weight every row when avgdl moved this much from the rows' weighting avgdl
EMPTY_DIM = 2**32 - 2  # a row without BM25 terms gets this dimension (no query uses it): sparse rows can't be empty


@dataclass
class Terms:
    """BM25 statistics of the committed rows: term -> [id, df], row count, total length, weighting avgdl."""

    terms: dict[str, list[int]] = field(default_factory=dict)
    n_docs: int = 0
    total_len: int = 0
    weighted_avgdl: float = 0.0  # the avgdl the stored rows were weighted with
    next_id: int = 0
    params: dict = field(default_factory=lambda: asdict(BM25Params()))

    @property
    def avgdl(self) -> float:
        return self.total_len / self.n_docs if self.n_docs else 0.0

    def copy(self) -> Terms:
        return replace(self, terms={t: list(v) for t, v in self.terms.items()}, params=dict(self.params))

    def add(self, rows: Sequence[list[str]]) -> list[dict[int, int]]:
        """Count `rows` in (new terms get ids); returns each row's {term id: tf}."""
        out = []
        for tokens in rows:
            counts = {}
            for term, tf in Counter(tokens).items():
                entry = self.terms.get(term)
                if entry is None:
                    entry = self.terms[term] = [self.next_id, 0]
                    self.next_id += 1
                entry[1] += 1
                counts[entry[0]] = tf
            out.append(counts)
            self.n_docs += 1
            self.total_len += len(tokens)
        return out

    def remove(self, rows: Sequence[dict[int, int]]) -> None:
        """Count stored rows ({term id: tf}) out; terms no row holds any more are dropped."""
        by_id = {entry[0]: term for term, entry in self.terms.items()}
        for counts in rows:
            for term_id in counts:
                term = by_id[int(term_id)]
                self.terms[term][1] -= 1
                if self.terms[term][1] == 0:
                    del self.terms[term]
            self.n_docs -= 1
            self.total_len -= sum(counts.values())

    def drifted(self) -> bool:
        """Whether the stored rows' weighting avgdl is too far from the live one."""
        if not self.weighted_avgdl:
            return True
        return abs(self.avgdl - self.weighted_avgdl) > REWEIGHT_DRIFT * self.weighted_avgdl

    def row_vector(self, counts: dict[int, int]) -> dict[int, float]:
        """A row's sparse BM25 vector (term id -> tf part of the score), weighted with `weighted_avgdl`."""
        if not counts:
            return {EMPTY_DIM: 1e-9}
        p = BM25Params(**self.params)
        norm = length_norm(sum(counts.values()), self.weighted_avgdl, p)
        tfs = np.fromiter(counts.values(), np.float64, len(counts))
        return dict(zip((int(t) for t in counts), term_weight(tfs, norm, p.k1).tolist()))

    def query_vector(self, tokens: list[str]) -> dict[int, float]:
        """The query's sparse vector: idf per token (repeated tokens count again); unknown terms dropped.

        A negative idf (rank-bm25's floor of a negative mean, only in corpora of a few rows) cannot be
        sent (Milvus takes non-negative weights), so such terms are dropped too."""
        idfs = self._idf()
        out: dict[int, float] = {}
        for token in tokens:
            entry = self.terms.get(token)
            if entry is not None and idfs.get(entry[0], 0.0) > 0:
                out[entry[0]] = out.get(entry[0], 0.0) + idfs[entry[0]]
        return out

    @functools.cached_property
    def _idf_cache(self) -> dict[int, float]:
        ids = np.fromiter((e[0] for e in self.terms.values()), np.int64, len(self.terms))
        df = np.fromiter((e[1] for e in self.terms.values()), np.float64, len(self.terms))
        return dict(zip(ids.tolist(), idf(df, self.n_docs, self.params["epsilon"]).tolist()))

    def _idf(self) -> dict[int, float]:
        return self._idf_cache
