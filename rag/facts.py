"""Facts a cited text must hold: the numbers and named terms of an answer sentence.

A sentence that states a number (digits, Chinese numerals, English number words before a unit) or a
named Latin term (a digit, inner capital, acronym, or a capital mid-sentence) that its cited text does
not contain is unsupported whatever its word overlap (rag/cite.py). Glossary equivalents count
(LLM = 大语言模型); list numbers are no facts.
"""

from __future__ import annotations

import difflib
import functools
import itertools
import re
from collections.abc import Mapping
from types import MappingProxyType

from rag.text import CITATION_MARK, CJK_CHAR, glossary_equivalents, normalize, strip_all_space

_ARABIC = re.compile(r"(?<![A-Za-z\d.])(?<![A-Za-z]-)\d+(?:[.,]\d+)*(?![A-Za-z])(?:\s*[万亿])?")
_ZH_NUMERAL = re.compile(r"[零〇一二两三四五六七八九十百千万亿]+")
_ZH_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_ZH_UNITS = {"十": 10, "百": 100, "千": 1000}
_ZH_BIG = {"万": 10_000, "亿": 100_000_000}
_EN_NUMBERS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())} | {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
                                                      "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100}
_EN_NUMBER_WORDS = re.compile(r"\b(?:" + "|".join(_EN_NUMBERS) + r")(?:[- ](?:" + "|".join(_EN_NUMBERS) + r"))*\b", re.I)
# A Chinese numeral or English number word is a checked fact only before a unit ("两小时", "four minutes"):
# elsewhere ("一种", "one of") it is grammar, not a quantity.
_UNIT_AFTER = re.compile(r"\s*(?:分钟|小时|秒|天|周|个月|月|年|倍|岁|元|次|层|页|万|亿|%|％|个百分点|"
                         r"minutes?|hours?|seconds?|days?|weeks?|months?|years?|times|percent|pages?|layers?)", re.I)
_LATIN_TERM = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-+._/][A-Za-z0-9]+)*")
_NAME_RUN = re.compile(rf"{_LATIN_TERM.pattern}(?:[ \t]+{_LATIN_TERM.pattern})*")  # "Prefix LM", "Auto Regressive"
# A list item's bold label ("1. **Training Data and Computational Resources**: ..."): Title Case words, no names.
_LABEL = re.compile(r"\*\*[^*\n]{1,80}\*\*\s*[:：]")
_BULLET, _CHECKBOX = r"[-*•·]\s*", r"\[[ xX]\]\s*"
# A checklist item ("• [x] Deep Norm 篇", "- [ ] 3. …"): a table-of-contents entry, no statement.
CHECKLIST_ITEM = re.compile(rf"\s*(?:{_BULLET})?{_CHECKBOX}")
# A list item's number ("1.", "2、", "(3)", "• [x] 4.") is no fact, in an answer or in a source.
LIST_NUMBER = re.compile(rf"^\s*(?:{_BULLET})?(?:{_CHECKBOX})?(?:\d{{1,2}}[.、)]|[(（]\d{{1,2}}[)）])\s*")
# A term glossed in brackets: "奖励模型(RM)", "RM (Reward Model)", "RM(奖励模型)".
_GLOSSED = re.compile(r"([A-Za-z][\w-]*)\s*[(（]([^()（）]{2,40})[)）]|([\u4e00-\u9fff]{2,12})\s*[(（]([A-Za-z][\w-]*)[)）]")
# Capitalized words that are no names: a capital mid-sentence on these is grammar or style.
_COMMON_CAPITALIZED = frozenset(
    "i a an the this that these those it its in on at for to of and or but not no yes if when while with by from "
    "as is are was were be so also both each every all some any according however therefore chinese english "
    "note notes source sources document documents answer question step first second third finally then".split())
# Capitals that name nothing: the half of the day of a clock time ("10:00 AM" states 上午 10:00; its digits are checked).
_NO_NAMES = frozenset({"am", "pm", "a.m", "p.m"})


def _zh_number(numeral: str) -> int | None:
    """'十五' -> 15, '两' -> 2, '三百二十' -> 320, '一千' -> 1000, '1' digits per char ('二〇二三') -> 2023."""
    if all(ch in _ZH_DIGITS for ch in numeral):
        return int("".join(str(_ZH_DIGITS[ch]) for ch in numeral))
    total, section, digit = 0, 0, None
    for ch in numeral:
        if ch in _ZH_DIGITS:
            digit = _ZH_DIGITS[ch]
        elif ch in _ZH_UNITS:
            section += (1 if digit is None else digit) * _ZH_UNITS[ch]
            digit = None
        elif ch in _ZH_BIG:
            total += (section + (digit or 0)) * _ZH_BIG[ch]
            section, digit = 0, None
    return total + section + (digit or 0)


def _en_number(words: str) -> int:
    """'thirty-two' -> 32, 'four' -> 4, 'two hundred' -> 200."""
    value = 0
    for word in re.split(r"[- ]", words.lower()):
        n = _EN_NUMBERS[word]
        value = value * n if n == 100 and value else value + n
    return value


def _arabic(text: str) -> str:
    """'8,000' -> '8000', '2.0' -> '2', '10 万' -> '100000' ('10 729' is joined by the caller)."""
    value = text.replace(",", "").rstrip()
    scale = _ZH_BIG.get(value[-1], 1)
    value = value.rstrip("万亿").rstrip()
    if scale > 1:
        number = float(value) * scale
        return str(int(number)) if number.is_integer() else str(number)
    if "." in value:
        value = value.rstrip("0").rstrip(".")
    return value


def numbers_in(text: str, *, quantities_only: bool = False) -> set[str]:
    """The numbers `text` states, as canonical strings: digits, Chinese numerals, English number words.

    With `quantities_only`, Chinese numerals and English number words count only before a unit.
    """
    text = normalize(text)
    found = {_arabic(m.group(0)) for m in _ARABIC.finditer(re.sub(r"(?<=\d) (?=\d{3}\b)", "", text))}
    for pattern, convert in ((_ZH_NUMERAL, _zh_number), (_EN_NUMBER_WORDS, _en_number)):
        for m in pattern.finditer(text):
            if quantities_only and not _UNIT_AFTER.match(text, m.end()):
                continue
            value = convert(m.group(0))
            if value is not None:
                found.add(str(value))
    return found


def _is_term(word: str) -> bool:
    """A word part that names something by itself: a digit or a capital in it ('CPU', 'v2'), not 'only'."""
    return any(ch.isdigit() or ch.isupper() for ch in word)


def salient_terms(sentence: str) -> set[str]:
    """Latin-script terms that name something: with a digit, inner capitals, all capitals, or a capital mid-sentence."""
    terms = set()
    for m in _LATIN_TERM.finditer(sentence):
        word = m.group(0)
        if word.lower() in _NO_NAMES:
            continue
        inner_capital = any(ch.isupper() for ch in word[1:])
        before = sentence[:m.start()].rstrip()
        # a capital after a colon, a list number or a quote starts a sentence; only one mid-sentence names
        mid_sentence = bool(before) and (before[-1].isalnum() or before[-1] in ",，")
        named = word[0].isupper() and mid_sentence and word.lower() not in _COMMON_CAPITALIZED
        if any(ch.isdigit() for ch in word) or inner_capital or named:
            terms.add(word)
    return terms


def _term_found(term: str, cited: str) -> bool:
    """A term is found in the lower-cased cited text as itself, singular, by its glossary equivalents,
    or (a compound such as 'cpu-only') by each of its parts that is a term itself."""
    lower = term.lower()
    variants = {lower, lower.rstrip("s"), lower.removesuffix("'s")}
    if any(v and re.search(rf"(?<![a-z0-9]){re.escape(v)}(?![a-z0-9])", cited) for v in variants):
        return True
    if any(eq in cited for v in variants for eq in glossary_equivalents(v)):
        return True
    if _spelled_out(term, cited):
        return True
    parts = [p for p in re.split(r"[-+._/]", term) if p]
    return len(parts) > 1 and all(_term_found(p, cited) for p in parts if _is_term(p))


def _spelled_out(term: str, cited: str) -> bool:
    """An acronym found as the words it stands for: 'GQA' in '… grouped-query attention …', and one written in
    mixed case by the words' first letters: 'LoRA' in 'QLoRA(Quantized Low-Rank Adaptation)' ("Lo", "R", "A").
    A mixed-case one must open with two letters of its first word: "LLaMA" ("L", "La", "M", "A") would be
    named by any "large language model a…"."""
    letters = term.removesuffix("s") if term[:-1].isupper() else term
    if 3 <= len(letters) <= 6 and letters.isalpha() and letters.isupper():  # "AI" is "an input"
        starts = list(letters.lower())
    else:
        starts = [w.lower() for w in re.findall(r"[A-Z][a-z]*", term)]
        if not (3 <= len(starts) <= 6 and "".join(starts) == term.lower() and len(starts[0]) > 1):
            return False
    words = r"[\s-]+".join(rf"{start}[a-z]*" for start in starts)
    return re.search(rf"(?<![a-z0-9]){words}(?![a-z0-9])", cited) is not None


def _plain(sentence: str) -> str:
    """`sentence` without citation markers, a leading list number or a list item's bold label."""
    return LIST_NUMBER.sub("", CITATION_MARK.sub("", _LABEL.sub("", normalize(sentence))))


@functools.lru_cache(maxsize=64)  # attribution judges every sentence against every source for one question
def _aliases(question: str) -> Mapping[str, str]:
    """Terms the question glosses in brackets: '奖励模型(RM)' -> {'rm': '奖励模型'}, 'RM(奖励模型)' likewise."""
    out = {}
    for m in _GLOSSED.finditer(normalize(question)):
        term, gloss = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
        out[term.lower()] = gloss.lower()
        if not CJK_CHAR.search(gloss):  # "BPE(Byte-Pair Encoding)": either names the other
            out[gloss.lower()] = term.lower()
    return MappingProxyType(out)  # cached: read-only


def _gloss_found(gloss: str, context: str) -> bool:
    """The gloss, or its last 4+ characters ("训练奖励模型(RM)" glosses RM as "奖励模型" just as well)."""
    if not CJK_CHAR.search(gloss):
        return bool(gloss) and gloss in context
    return any(gloss[i:] in context for i in range(max(1, len(gloss) - 3)))


@functools.lru_cache(maxsize=64)
def _names(question: str) -> tuple[tuple[str, ...], ...]:
    """The question's named terms grouped into names: terms only a space apart are one name ("ZhiKu DocQA"),
    others ("RoPE 和 ALiBi", "MQA and GQA") are separate names."""
    salient = salient_terms(question)
    names: list[list[str]] = []
    end = None
    for m in _LATIN_TERM.finditer(question):
        if m.group(0) not in salient:
            end = None
            continue
        if end is not None and not question[end:m.start()].strip():
            names[-1].append(m.group(0))
        else:
            names.append([m.group(0)])
        end = m.end()
    return tuple(tuple(n) for n in names)


def unnamed_subjects(sentence: str, question: str, named_in: str) -> list[str]:
    """The named subjects of the question that `sentence` repeats and `named_in` (what the cited sources
    state, with their headings and titles) does not name; [] when it names each of them.

    `missing_facts` lets a sentence repeat what the question names. That also lets a small model pin the
    question's subject on another subject's sentence ("SentencePiece 的思路是…" cited to a source about
    BPE; "RoPE 和 ALiBi 在长度外推上表现更好" cited to a source about ALiBi alone). A name of several
    words is named by any of them ("ZhiKu DocQA" by a title "知库 DocQA …"); a term the question glosses
    in brackets by its gloss.
    """
    question = normalize(question)
    plain = _plain(sentence).lower()
    context = normalize(named_in).lower()
    aliases = _aliases(question)

    def named(term: str) -> bool:
        return _term_found(term, context) or _gloss_found(aliases.get(term.lower(), ""), context)

    repeated = [name for name in _names(question) if any(_term_found(t, plain) for t in name)]
    return sorted(" ".join(name).lower() for name in repeated if not any(named(t) for t in name))


def missing_facts(sentence: str, cited_text: str, known: str = "") -> list[str]:
    """Numbers and named terms of `sentence` that neither the cited text nor `known` (e.g. the question) contains.

    Citation marker numbers, a leading list number and a list item's bold label are not facts.
    """
    plain = _plain(sentence)
    context = normalize(cited_text + "\n" + known)
    have = numbers_in(context, quantities_only=True)  # the "一" of "一些" or "统一" is no 1
    missing = sorted(n for n in numbers_in(plain, quantities_only=True) if n not in have)
    lower = context.lower()
    missing += sorted(t.lower() for t in salient_terms(plain) if not _term_found(t, lower))
    return missing


def names_in(text: str) -> set[str]:
    """The Latin names of `text`: runs of name words only spaces apart ("Prefix LM", "Auto Regressive"), a name
    word being a salient term or a capitalized word that is no grammar, each run holding a salient term."""
    salient = salient_terms(text)
    out = set()
    for m in _NAME_RUN.finditer(text):
        run: list[str] = []
        for word in [*m.group(0).split(), ""]:
            if word in salient or word[:1].isupper() and word.lower() not in _COMMON_CAPITALIZED:
                run.append(word)
                continue
            if any(w in salient for w in run):
                out.add(" ".join(run))
            run = []
    return out


def _squashed(text: str) -> str:
    return strip_all_space(text).lower()


def _name_found(name: str, text: str) -> bool:
    """A name in lower-cased `text`: spaces aside ("PrefixLM"), or a one-word name as a term (`_term_found`)."""
    return _squashed(name) in _squashed(text) or (" " not in name and _term_found(name, text))


ALIGNED = 0.6  # share of the characters that tell two names apart that must line up for a swap (swapped_names)


def _matched(a: str, b: str) -> int:
    """Characters of `a` and `b` that line up (difflib's matching blocks)."""
    return sum(m.size for m in difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks())


_COMPARISON = re.compile(r"区别|不同|差异|异同|差别|\bdiffer(?:ences?|s)?\b|\bcompared?\b|\bvs\b|\bversus\b", re.I)
_JOINED = re.compile(r"\s*(?:和|与|跟|同|及|还是|\bvs\.?|\bversus\b|\band\b|\bor\b)\s*", re.I)
_FILLER = re.compile(r"^(?:请问|请|what(?:'s| is| are)? the|how does|how do|between)\s*|\s*\b(?:between)\s*", re.I)


@functools.lru_cache(maxsize=64)
def compared_subjects(question: str) -> tuple[str, ...]:
    """The two things a comparison question sets side by side: ("稀疏向量", "稠密向量") for "稀疏向量和稠密向量有什么
    区别？", ("Prefix LM", "Causal LM") for "What is the difference between Prefix LM and Causal LM?"; () for others.
    In a sentence that copies a source, either is a name that must not stand where the source has the other."""
    question = normalize(question)
    m = _COMPARISON.search(question)
    if m is None:
        return ()
    before = question[: m.start()]
    span = before if _JOINED.search(before) else question[m.end():]  # "difference between X and Y"
    parts = _JOINED.split(span, maxsplit=1)
    if len(parts) != 2:
        return ()
    left = re.findall(r"[\w\- ]+$", parts[0])
    right = re.match(r"[\w\- ]+?(?=之间|的|有|在|是|[?？,，。]|\s*$)", parts[1])
    if not left or right is None:
        return ()
    subjects = tuple(_FILLER.sub("", x).strip() for x in (left[0], right.group(0)))
    return subjects if all(2 <= len(x) <= 24 for x in subjects) else ()


def swapped_names(sentence: str, copied: str, compared: tuple[str, ...] = ()) -> list[str]:
    """Names `sentence` puts where the source text it copies (`copied`) has others: ["prefix lm ≠ causal lm"]
    when "Prefix LM 只涉及到 Decoder 部分…" copies "Causal LM只涉及到Decoder部分…". A name of the sentence that
    `copied` lacks is swapped for a name of `copied` that the sentence lacks when putting the latter in its place
    lines up ALIGNED of the characters that tell the two apart with `copied` ("Grouped" for "Multi" in
    "…-query Attention"); a name elsewhere in `copied` ("介于 MHA 与 MQA 之间") does not line up, and a name
    `copied` glosses with one the sentence has ("RM(Reward Modeling)" for "RM") is no other name. The subjects a
    comparison question sets side by side (`compared`, e.g. "稀疏向量" and "稠密向量") are names too; a name in
    another script than the source's is a translation, not a swap."""
    plain, source = normalize(_plain(sentence)), normalize(copied)
    ours = sorted(n for n in names_in(plain) | {c for c in compared if _name_found(c, plain.lower())}
                  if not _name_found(n, source.lower()))
    glossed = _aliases(source)  # "RM(Reward Modeling)": the answer's "RM" names "Reward Modeling"
    theirs = sorted(n for n in names_in(source) | {c for c in compared if _name_found(c, source.lower())}
                    if not any(_name_found(x, plain.lower()) for x in (n, glossed.get(n.lower())) if x))
    if not ours or not theirs:
        return []
    answer, squashed = _squashed(plain), _squashed(source)
    base = _matched(answer, squashed)
    out = []
    for name, other in itertools.product(ours, theirs):
        if bool(CJK_CHAR.search(name)) != bool(CJK_CHAR.search(other)):
            continue  # "前缀语言模型" where the source says "Prefix LM" translates it
        mine, its = _squashed(name), _squashed(other)
        apart = len(its) - _matched(mine, its)
        if apart > 0 and _matched(answer.replace(mine, its, 1), squashed) - base >= max(1.0, ALIGNED * apart):
            out.append(f"{name.lower()} ≠ {other.lower()}")
    return out
