"""BM25 (Okapi, rank-bm25's variant) over token lists, stored as plain numpy arrays.

Scores equal `rank_bm25.BM25Okapi(corpus).get_scores(query)` on the same tokens: the same idf
(with its epsilon floor for negative idf), k1, b and average document length. Documents are held
as a CSR matrix of term counts (row = chunk), the inverted index is derived from it on load, so
adding and deleting rows is array surgery, not a rebuild of Python dicts.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FILES = ("doc_len.npy", "indptr.npy", "term_ids.npy", "tfs.npy", "vocab.json", "params.json")


@dataclass(frozen=True)
class BM25Params:
    """Okapi parameters; defaults are rank-bm25's."""

    k1: float = 1.5
    b: float = 0.75
    epsilon: float = 0.25


def idf(df: np.ndarray, n_docs: int, epsilon: float) -> np.ndarray:
    """rank-bm25's idf per term: log(N - df + 0.5) - log(df + 0.5); a negative idf becomes epsilon times
    the mean idf of the terms present; 0 for terms no row holds."""
    df = np.asarray(df, np.float64)
    present = df > 0
    out = np.log(n_docs - df + 0.5) - np.log(df + 0.5)
    mean = out[present].mean() if present.any() else 0.0
    out[present & (out < 0)] = epsilon * mean
    out[~present] = 0.0
    return out


def length_norm(doc_len, avgdl: float, params: BM25Params):
    """k1 * (1 - b + b * dl / avgdl): the denominator term of a row of length `doc_len`."""
    return params.k1 * (1 - params.b + params.b * np.asarray(doc_len, np.float64) / (avgdl or 1.0))


def term_weight(tf, norm, k1: float):
    """The row side of a BM25 term score: tf * (k1 + 1) / (tf + norm); the score adds idf * this per query token."""
    tf = np.asarray(tf, np.float64)
    return tf * (k1 + 1) / (tf + norm)


class BM25Index:
    """Term-count rows for every chunk plus the derived postings, idf and length norms."""

    def __init__(
        self,
        vocab: list[str],
        indptr: np.ndarray,
        term_ids: np.ndarray,
        tfs: np.ndarray,
        params: BM25Params = BM25Params(),
    ) -> None:
        self.vocab = vocab
        self.term_index = {term: i for i, term in enumerate(vocab)}
        self.indptr = indptr.astype(np.int64)
        self.term_ids = term_ids.astype(np.int32)
        self.tfs = tfs.astype(np.float32)
        self.params = params
        self._derive()

    # --- construction -----------------------------------------------------------------------
    @classmethod
    def empty(cls, params: BM25Params = BM25Params()) -> BM25Index:
        """An index with no rows."""
        return cls([], np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), params)

    @classmethod
    def from_tokens(cls, docs: list[list[str]], params: BM25Params = BM25Params()) -> BM25Index:
        """Build from one token list per row."""
        return cls.empty(params).appended(docs)

    def appended(self, docs: list[list[str]]) -> BM25Index:
        """A new index with rows for `docs` added at the end."""
        vocab = list(self.vocab)
        index = dict(self.term_index)
        indptr, ids, tfs = [int(self.indptr[-1])], [], []
        for tokens in docs:
            for term, count in Counter(tokens).items():
                if term not in index:
                    index[term] = len(vocab)
                    vocab.append(term)
                ids.append(index[term])
                tfs.append(count)
            indptr.append(indptr[0] + len(ids))
        return BM25Index(
            vocab,
            np.concatenate([self.indptr, np.asarray(indptr[1:], np.int64)]),
            np.concatenate([self.term_ids, np.asarray(ids, np.int32)]),
            np.concatenate([self.tfs, np.asarray(tfs, np.float32)]),
            self.params,
        )

    def subset(self, keep: np.ndarray) -> BM25Index:
        """A new index with only the rows where the boolean mask `keep` is true (order kept)."""
        rows = np.flatnonzero(keep)
        lengths = np.diff(self.indptr)[rows]
        starts = self.indptr[:-1][rows]
        take = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths)]) if len(rows) else []
        take = np.asarray(take, np.int64)
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return BM25Index(self.vocab, indptr, self.term_ids[take], self.tfs[take], self.params)

    # --- derived state ----------------------------------------------------------------------
    def _derive(self) -> None:
        """Document lengths, idf with rank-bm25's epsilon floor, length norms, postings."""
        n_docs = len(self.indptr) - 1
        self.n_docs = n_docs
        rows = np.repeat(np.arange(n_docs, dtype=np.int32), np.diff(self.indptr))
        self.doc_len = np.bincount(rows, weights=self.tfs, minlength=n_docs).astype(np.float64)
        df = np.bincount(self.term_ids, minlength=len(self.vocab)).astype(np.float64)
        self.idf = idf(df, n_docs, self.params.epsilon)
        self._norm = length_norm(self.doc_len, self.doc_len.mean() if n_docs else 1.0, self.params)
        # Postings: the CSR transposed (stable sort keeps row order inside each term).
        order = np.argsort(self.term_ids, kind="stable")
        self._post_rows = rows[order]
        self._post_tfs = self.tfs[order]
        self._post_ptr = np.concatenate([[0], np.cumsum(df)]).astype(np.int64)

    # --- scoring ----------------------------------------------------------------------------
    def scores(self, query: list[str]) -> np.ndarray:
        """BM25 score of every row for the query tokens (repeated tokens count again)."""
        out = np.zeros(self.n_docs, np.float64)
        k1 = self.params.k1
        for term in query:
            t = self.term_index.get(term)
            if t is None or self.idf[t] == 0.0:
                continue
            lo, hi = self._post_ptr[t], self._post_ptr[t + 1]
            rows, tf = self._post_rows[lo:hi], self._post_tfs[lo:hi]
            out[rows] += self.idf[t] * term_weight(tf, self._norm[rows], k1)
        return out

    def top_k(self, query: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(row indices, scores) of the k best rows that match at least one query token."""
        matched = [self.term_index[t] for t in set(query) if t in self.term_index]
        if not matched or k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        cand = np.unique(
            np.concatenate([self._post_rows[self._post_ptr[t] : self._post_ptr[t + 1]] for t in matched])
        )
        scores = self.scores(query)[cand]
        if len(cand) > k:  # keep everything scoring at least the k-th best, ties included
            kth = np.partition(scores, len(scores) - k)[len(scores) - k]
            keep = scores >= kth
            cand, scores = cand[keep], scores[keep]
        order = np.lexsort((cand, -scores))[:k]  # score desc, then row asc for ties
        return cand[order], scores[order]

    # --- persistence (plain .npy and .json files) -------------------------------------------------
    def save(self, folder: Path) -> None:
        """Write arrays as .npy and the vocabulary/params as JSON."""
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "indptr.npy", self.indptr, allow_pickle=False)
        np.save(folder / "term_ids.npy", self.term_ids, allow_pickle=False)
        np.save(folder / "tfs.npy", self.tfs, allow_pickle=False)
        np.save(folder / "doc_len.npy", self.doc_len, allow_pickle=False)
        (folder / "vocab.json").write_text(json.dumps(self.vocab, ensure_ascii=False), encoding="utf-8")
        params = {"k1": self.params.k1, "b": self.params.b, "epsilon": self.params.epsilon}
        (folder / "params.json").write_text(json.dumps(params))

    @classmethod
    def load(cls, folder: Path) -> BM25Index:
        """Read an index written by `save`."""
        params = BM25Params(**json.loads((folder / "params.json").read_text()))
        return cls(
            json.loads((folder / "vocab.json").read_text(encoding="utf-8")),
            np.load(folder / "indptr.npy", allow_pickle=False),
            np.load(folder / "term_ids.npy", allow_pickle=False),
            np.load(folder / "tfs.npy", allow_pickle=False),
            params,
        )
