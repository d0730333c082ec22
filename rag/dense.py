"""Dense index: FAISS inner product over L2-normalized vectors; exact when small, HNSW when large."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128


class DenseIndex:
    """Vectors (the source of truth, `vectors.npy`) plus the FAISS structure built from them."""

    def __init__(self, vectors: np.ndarray, index: faiss.Index) -> None:
        self.vectors = vectors
        self.index = index

    @property
    def kind(self) -> str:
        """'flat' (exact) or 'hnsw'."""
        return "hnsw" if isinstance(self.index, faiss.IndexHNSW) else "flat"

    @classmethod
    def build(cls, vectors: np.ndarray, *, dim: int, hnsw_threshold: int) -> DenseIndex:
        """Index `vectors` exactly below `hnsw_threshold` rows, with HNSW at or above it."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, dim)
        if len(vectors) >= hnsw_threshold:
            index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            index.hnsw.efSearch = HNSW_EF_SEARCH
        else:
            index = faiss.IndexFlatIP(dim)
        if len(vectors):
            index.add(vectors)
        return cls(vectors, index)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(row indices, inner-product scores), best first, for one normalized query vector."""
        k = min(k, self.index.ntotal)
        if k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        scores, rows = self.index.search(np.ascontiguousarray(query, np.float32).reshape(1, -1), k)
        keep = rows[0] >= 0
        return rows[0][keep], scores[0][keep]

    def save(self, folder: Path) -> None:
        """Write `vectors.npy` and FAISS' native `dense.faiss`."""
        np.save(folder / "vectors.npy", self.vectors, allow_pickle=False)
        faiss.write_index(self.index, str(folder / "dense.faiss"))

    @classmethod
    def load(cls, folder: Path) -> DenseIndex:
        """Read what `save` wrote (vectors memory-mapped)."""
        vectors = np.load(folder / "vectors.npy", mmap_mode="r", allow_pickle=False)
        index = faiss.read_index(str(folder / "dense.faiss"))
        if isinstance(index, faiss.IndexHNSW):
            index.hnsw.efSearch = HNSW_EF_SEARCH
        return cls(vectors, index)


def rocchio(query: np.ndarray, feedback: np.ndarray, weight: float) -> np.ndarray:
    """Rocchio's query: normalize(query + weight * mean of the feedback vectors); one query (k, dim) or many (n, k, dim)."""
    out = query + weight * feedback.mean(axis=-2)
    return out / np.linalg.norm(out, axis=-1, keepdims=True)
