"""BERT-family ONNX models run with onnxruntime on the CPU: a cross-encoder and a CLS-pooled embedder.

Shared objects hold only the session and the tokenizer (both safe to call from several threads);
every call builds its own batches.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=8)
def _session(model_path: str, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0 = onnxruntime's default (all cores)
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model_path, sess_options=options, providers=["CPUExecutionProvider"])


def _tokenizer(folder: Path, max_tokens: int | None = None):
    """The model's tokenizer; with `max_tokens`, truncating to it and padding each batch to its longest."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    if max_tokens is not None:
        tokenizer.enable_truncation(max_length=max_tokens, strategy="longest_first")
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest in each batch
    return tokenizer


class BertOnnx:
    """A BERT-style ONNX graph (input_ids, attention_mask, token_type_ids) and its tokenizer.json."""

    def __init__(self, folder: Path, *, threads: int = 0, batch_size: int = 16, max_tokens: int = 512) -> None:
        for name, value in (("batch_size", batch_size), ("max_tokens", max_tokens)):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if not (folder / "model.onnx").is_file():
            raise FileNotFoundError(f"no model.onnx in {folder}")
        self.folder = folder
        self.session = _session(str(folder / "model.onnx"), threads)
        self.tokenizer = _tokenizer(folder, max_tokens)
        self.counter = _tokenizer(folder)  # neither truncates nor pads: the chunker's token counts
        self.batch_size = batch_size
        self.max_tokens = max_tokens

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens per text, special tokens included, before truncation."""
        return [len(e.ids) for e in self.counter.encode_batch(texts, add_special_tokens=True)]

    def run(self, inputs: list) -> list[np.ndarray]:
        """The graph's first output per batch, inputs processed shortest first (less padding), in input order."""
        order = sorted(range(len(inputs)), key=lambda i: len(inputs[i][1] if isinstance(inputs[i], tuple) else inputs[i]))
        out: list[np.ndarray | None] = [None] * len(inputs)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            encodings = self.tokenizer.encode_batch([inputs[i] for i in batch])
            feed = {
                "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
            }
            result = self.session.run(None, feed)[0]
            for row, i in enumerate(batch):
                out[i] = result[row]
        return out  # type: ignore[return-value]


class OnnxCrossEncoder(BertOnnx):
    """Scores (query, passage) pairs with a sequence-classification head (one logit).

    `languages`: the languages it was trained on (None = any); the reranking stage skips others.
    """

    def __init__(self, folder: Path, *, languages: tuple[str, ...] | None = None, **options) -> None:
        super().__init__(folder, **options)
        self.languages = languages

    def scores(self, query: str, passages: list[str]) -> list[float]:
        """Raw logits, one per passage; higher is more relevant."""
        if not passages:
            return []
        return [float(logit[0]) for logit in self.run([(query, p) for p in passages])]


class OnnxEncoder(BertOnnx):
    """Sentence vectors: the [CLS] token's last hidden state, L2-normalized (BGE's pooling)."""

    def encode(self, texts: list[str]) -> np.ndarray:
        """float32 vectors, one row per text."""
        if not texts:
            return np.zeros((0, 0), np.float32)
        cls = np.stack([hidden[0] for hidden in self.run(texts)]).astype(np.float32)
        return cls / np.maximum(np.linalg.norm(cls, axis=1, keepdims=True), 1e-12)
