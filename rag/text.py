"""The one normalizer and tokenizer shared by ingest and query (never two copies)."""

from __future__ import annotations

import functools
import logging
import re
import threading
import unicodedata
from pathlib import Path

logger = logging.getLogger(__name__)

TERMS_FILE = Path(__file__).with_name("terms.txt")
TOKENIZER_VERSION = "jieba-0.42.1+terms1+stop1+snowball-en"

# Zero-width and invisible formatting characters that NFKC keeps.
_INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e]")
_HSPACE = re.compile(r"[^\S\n]+")  # horizontal whitespace runs (NFKC already mapped NBSP/U+3000)
CJK_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")
WORD_CHAR = re.compile(r"[\w\u3400-\u9fff]")  # a letter, digit or ideograph
_ENGLISH_WORD = re.compile(r"[a-z]+")

STOPWORDS = frozenset(
    "的 了 是 在 和 与 及 或 也 就 都 而 被 把 对 于 中 为 以 上 下 这 那 其 之 等 个 一个 一种 "
    "我们 你 我 他 它 可以 什么 吗 呢 吧 啊 如何 怎么 怎样 哪些 有 没有 会 能 要 "
    "a an the of to in on for and or is are was were be been by with as at it its this that "
    "what which how why does do did from".split()
)


# CJK Radicals Supplement (U+2E80-U+2EFF) has no NFKC mapping; fold the simplified-form
# radicals that scraped PDFs use in place of the ideographs.
_RADICALS_SUPPLEMENT = str.maketrans(
    dict(pair for pair in "⻅见 ⻆角 ⻉贝 ⻋车 ⻓长 ⻔门 ⻘青 ⻙韦 ⻚页 ⻛风 ⻜飞 ⻢马 ⻥鱼 ⻦鸟 ⻨麦 "
         "⻩黄 ⻬齐 ⻮齿 ⻰龙 ⻳龟 ⻝食 ⻣骨 ⻤鬼 ⻧卤 ⻪黾".split())
)


def normalize(text: str) -> str:
    """NFKC (folds CJK radical look-alikes, full-width forms, NBSP), drop invisibles, unify newlines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = unicodedata.normalize("NFKC", text).translate(_RADICALS_SUPPLEMENT)
    return _INVISIBLE.sub("", text)


def squash_spaces(text: str) -> str:
    """Collapse horizontal whitespace runs to one space (newlines kept)."""
    return _HSPACE.sub(" ", text)


def strip_all_space(text: str) -> str:
    """NFKC and remove every whitespace character (the evidence-matching form)."""
    return "".join(normalize(text).split())


def script_counts(text: str) -> tuple[int, int]:
    """(CJK characters, Latin letters) in `text`."""
    return len(CJK_CHAR.findall(text)), len(_LATIN.findall(text))


def language_of_counts(cjk: int, latin: int) -> str:
    """'zh' when CJK characters make up a fair share of the letters, else 'en'."""
    return "zh" if cjk and cjk * 3 >= latin else "en"


def language(text: str) -> str:
    """'zh' when CJK characters make up a fair share of the letters, else 'en'."""
    return language_of_counts(*script_counts(text))


# Grammar words of a question: they, not the letters of its names, tell the language it is asked in.
_ZH_GRAMMAR = re.compile(r"什么|怎么|怎样|如何|为什么|哪|吗|呢|的|是|和|与|有|在|了|吧|么")
_EN_GRAMMAR = frozenset("what which who whom whose when where why how is are was were do does did can could should "
                        "would will the a an of in on for to and or between with by from".split())
_QUOTED = re.compile(r"《[^》]*》|“[^”]*”|「[^」]*」|\"[^\"]*\"")


def question_language(question: str) -> str:
    """The language a question is asked in: 'zh' or 'en' by its grammar words ("Multi-query Attention 和
    Grouped-query Attention 的区别是什么？" is Chinese whatever the letters of its names; "What is the difference
    between 稀疏向量 and 稠密向量?" English), quoted titles aside; by its scripts (`language`) when they tie."""
    frame = _QUOTED.sub(" ", question)  # a title's words ("《This Is Where I Came In》是…") are not its grammar
    zh = len(_ZH_GRAMMAR.findall(frame))
    en = sum(w in _EN_GRAMMAR for w in _ENGLISH_WORD.findall(frame.lower()))
    return language(question) if zh == en else "zh" if zh > en else "en"


@functools.lru_cache(maxsize=1)
def _terms() -> tuple[tuple[str, ...], re.Pattern | None]:
    """(single-word terms for jieba, regex matching multi-word terms)."""
    terms = [
        line.strip()
        for line in TERMS_FILE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    spaced = sorted((t for t in terms if " " in t), key=len, reverse=True)
    single = tuple(t for t in terms if " " not in t)
    pattern = None
    if spaced:
        alts = "|".join(r"\s*".join(map(re.escape, t.split())) for t in spaced)
        pattern = re.compile(rf"(?<![A-Za-z0-9])(?:{alts})(?![A-Za-z0-9])", re.IGNORECASE)
    return single, pattern


@functools.lru_cache(maxsize=1)
def _jieba():
    """A private jieba tokenizer with the term list added (loaded once per process)."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    tok = jieba.Tokenizer()
    tok.initialize()
    for term in _terms()[0]:
        tok.add_word(term, freq=200_000)
    return tok


def _segment(text: str) -> list[str]:
    return [w for w in _jieba().lcut(text, HMM=True) if WORD_CHAR.search(w)]


_local = threading.local()


def _stemmer():
    """Snowball's English stemmer (PyStemmer, C): "models" and "model" become one BM25 term.
    One per thread: a PyStemmer object must not be shared between threads (Streamlit sessions are threads)."""
    if not hasattr(_local, "stemmer"):
        import Stemmer

        _local.stemmer = Stemmer.Stemmer("english")
    return _local.stemmer


def stem_english(word: str) -> str:
    """The stem `tokenize` gives a lower-case English word ("representations" -> "represent")."""
    return _stemmer().stemWord(word)


def tokenize(text: str) -> list[str]:
    """BM25 tokens: normalized, jieba-segmented, lower-cased, terms kept whole, stopwords dropped,
    English words stemmed (mixed tokens such as "llama2" and the term list's phrases stay as they are)."""
    text = normalize(text)
    _, spaced = _terms()
    words: list[str] = []
    pos = 0
    for match in spaced.finditer(text) if spaced else ():
        words += _segment(text[pos : match.start()])
        words.append(" ".join(match.group(0).split()))
        pos = match.end()
    words += _segment(text[pos:])
    out = []
    stem = _stemmer().stemWord  # looked up once per text: tokenize runs over every chunk at ingest
    for word in words:
        word = word.strip().lower()
        if word and word not in STOPWORDS:
            out.append(stem(word) if _ENGLISH_WORD.fullmatch(word) else word)
    return out


GLOSSARY_FILE = Path(__file__).with_name("glossary.tsv")


@functools.lru_cache(maxsize=1)
def _glossary() -> tuple[re.Pattern, dict[str, str]]:
    """(regex over the English terms, longest first; term -> Chinese equivalents)."""
    table = {}
    for line in GLOSSARY_FILE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#") and "\t" in line:
            english, chinese = line.split("\t", 1)
            table[english.strip().lower()] = " ".join(c.strip() for c in chinese.split(","))
    alts = "|".join(re.escape(t) for t in sorted(table, key=len, reverse=True))
    return re.compile(rf"(?<![a-z0-9])(?:{alts})(?:s|es)?(?![a-z0-9])", re.IGNORECASE), table


def expand_query(text: str) -> str:
    """An English question plus the Chinese equivalents of its technical terms (from glossary.tsv)."""
    if language(text) != "en":
        return text
    pattern, table = _glossary()
    extra = []
    for match in pattern.finditer(text):
        term = match.group(0).lower()
        key = term if term in table else re.sub(r"(es|s)$", "", term)
        key = key if key in table else term[:-1]
        if key in table and table[key] not in extra:
            extra.append(table[key])
    return f"{text} {' '.join(extra)}" if extra else text


# --- sentences and citation markers (one copy of each rule) -----------------------------------

# [1]  [1, 2]  [1，2、3]  【1】  ［1］  [1-3]  [1;2]
CITATION_MARK = re.compile(r"[\[【［]\s*(\d{1,3}(?:\s*(?:[,，、;；]|-|–)\s*\d{1,3})*)\s*[\]】］]")
# A sentence ends at Chinese/English end punctuation, a period before a space (or before the citation
# markers that close the sentence: "… weights.[2] This …"), or a newline. A period after a number ends one
# too ("… dimension of 1024. This …"), except after a list number ("1. 第一步", "- 2. Next", "…归一化。2. b").
_AFTER_LIST_NUMBER = r"(?<!^\d)(?<!^\d\d)(?<![\s(（。！？!?；;：:]\d)(?<![\s(（。！？!?；;：:]\d\d)"
SENTENCE = re.compile(r"[^。！？!?；;\n]*?(?:[。！？!?；;]+|" + _AFTER_LIST_NUMBER + r"\.(?=(?:\s*" + CITATION_MARK.pattern
                      + r")*(?:\s|$))|\n|$)", re.S)


_QUESTION_END = re.compile(r"[?？]\s*$")


def is_question(sentence: str) -> bool:
    """A sentence that asks rather than states ("3. 涌现能力是啥原因?"): it backs no claim and answers nothing."""
    return bool(_QUESTION_END.search(CITATION_MARK.sub("", sentence)))


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of `text` that holds a word, surrounding whitespace excluded."""
    spans = []
    for m in SENTENCE.finditer(text):
        start, end = m.start(), m.end()
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if start < end and WORD_CHAR.search(text, start, end):
            spans.append((start, end))
    return spans


def glossary_terms() -> list[str]:
    """The English terms of glossary.tsv, lower-cased."""
    return list(_glossary()[1])


def glossary_equivalents(term: str) -> list[str]:
    """The Chinese equivalents glossary.tsv gives for an English term ('llm' -> ['大模型', '大语言模型'])."""
    return _glossary()[1].get(term.lower(), "").split()
