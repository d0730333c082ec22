"""Does the evidence hold the kind of answer the question asks for?

A question that asks for a year ("哪一年", "in what year") or for a quantity in a unit ("多少 GB",
"几倍", "how many bits") can only be answered from evidence that states a year in a sentence naming
something the question names (a revision date on its own line does not say when the thing asked about
happened), or a number in that unit. When the evidence has none, no answer can be cited, and asking the
LLM only invites an invented figure: the chain refuses at once (`refusal_reason = "answer_type"`).

Measured (README): of the 39 unanswerable development questions, 8 ask for a year or a unit quantity and
the rule refuses 7 of them (replayed on the recorded 1.5B run: refusal 0.333 -> 0.385, false refusals
unchanged at 0.057); none of the 43 answerable year/unit questions of CMRC2018 (1,002 questions) and none
of the sample set's is refused (also with the year's sentence required to name a question term; that
requirement refuses "知库 DocQA 是哪一年开源的？" over the sample, whose years are revision and release dates).
"哪几个" (which ones) asks for no count.
"""

from __future__ import annotations

import re

from rag.text import normalize, sentence_spans, tokenize

_YEAR_ASKED = re.compile(r"哪一?年|何年|\b(?:in )?(?:what|which) year\b", re.I)
_YEAR_WORDS = frozenset({"哪一年", "哪年", "何年", "一年", "年", "year", "what", "which", "in"})
_YEAR_STATED = re.compile(r"(?<!\d)1\d{3}(?!\d)|(?<!\d)20\d{2}(?!\d)|[〇零一二三四五六七八九]{4}\s*年|\d{2,4}\s*年")
_UNIT_ASKED = re.compile(r"(?:多少|(?<!哪)几)\s*([A-Za-z]+|[个倍层位种天年岁次条名座人米元项篇部届头只]|万|亿)|\bhow many\s+([A-Za-z]+)",
                         re.I)
_NUMBER = r"(\d+(?:\.\d+)?|[〇零一二两三四五六七八九十百千]+[万亿]?)"
# Counting words are interchangeable ("几个孩子" is answered by "3 名子女").
_COUNT_WORDS = ("个", "名", "位", "只", "条", "项", "种", "人", "头")
# A unit asked in English may be stated in Chinese (an English question over Chinese notes), and back.
_SAME_UNIT = (
    ("bit", "bits", "位", "比特"), ("byte", "bytes", "字节"), ("layer", "layers", "层"), ("head", "heads", "头", "个头"),
    ("times", "倍", "x"), ("year", "years", "年"), ("day", "days", "天", "日"), ("token", "tokens"),
    ("parameter", "parameters", "参数"), ("gb", "g", "gib"), ("mb", "m", "mib"),
)


def _units(asked: str) -> tuple[str, ...]:
    """The spellings that state a quantity in the asked unit."""
    asked = asked.lower()
    if asked in _COUNT_WORDS:
        return _COUNT_WORDS
    for group in _SAME_UNIT:
        if asked in group:
            return group
    return (asked, asked.rstrip("s"))


def asks_for_type(question: str) -> bool:
    """Whether the question asks for a year or for a quantity in a unit (the questions this rule judges)."""
    question = normalize(question)
    return bool(_YEAR_ASKED.search(question) or _UNIT_ASKED.search(question))


def _year_about_the_question(question: str, text: str) -> bool:
    """A sentence of `text` states a year and names something the question names.

    A year on its own line ("最后更新：2026-10-20", a revision date) does not say when the thing asked about
    happened.
    """
    terms = [t for t in tokenize(question) if t not in _YEAR_WORDS]
    return any(_YEAR_STATED.search(sentence) and (not terms or any(t in sentence for t in terms))
               for sentence in (text[a:b] for a, b in sentence_spans(text)))


def missing_answer_type(question: str, evidence: str) -> str:
    """'' when the evidence can answer the kind of question asked; else what it lacks ('year', 'quantity in GB')."""
    question, text = normalize(question), normalize(evidence).lower()
    if _YEAR_ASKED.search(question):
        return "" if _year_about_the_question(question, text) else "year"
    m = _UNIT_ASKED.search(question)
    if not m:
        return ""
    asked = m.group(1) or m.group(2)
    units = _units(asked)
    for unit in units:
        for found in re.finditer(rf"{_NUMBER}\s*[-多]?\s*{re.escape(unit)}", text):
            if not (units is _COUNT_WORDS and found.group(1) == "一"):  # "一个", "一种" are grammar, not a count
                return ""
    return f"quantity in {asked}"
