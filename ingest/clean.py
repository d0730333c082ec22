"""Clean loaded text: normalize, inline HTML to structure, page-furniture rules, whitespace."""

from __future__ import annotations

import html
import logging
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from rag.text import normalize, squash_spaces

logger = logging.getLogger(__name__)

__all__ = ["RULES", "Cleaned", "clean", "clean_pages", "is_toc_like"]


@dataclass(frozen=True)
class Cleaned:
    """Cleaned text plus how many characters each step removed."""

    text: str
    removed_chars: int
    original_chars: int
    rules: dict[str, int]  # step or rule name -> characters removed (negative: added)

    @property
    def removed_share(self) -> float:
        """Removed characters as a share of the original text (0.0 for empty input)."""
        return self.removed_chars / self.original_chars if self.original_chars else 0.0


def clean(text: str) -> Cleaned:
    """Normalize, convert inline HTML, drop page furniture line by line, tidy whitespace."""
    steps: dict[str, int] = {}
    original = len(text)
    text = _step(steps, "normalize", text, normalize)
    if has_inline_html(text):
        text = _step(steps, "html", text, html_to_text)
    lines = text.split("\n")
    for name, rule in RULES:
        drop = rule(lines)
        steps[name] = sum(len(lines[i]) + 1 for i in drop)
        lines = [line for i, line in enumerate(lines) if i not in drop]
    text = _step(steps, "whitespace", "\n".join(lines), tidy_whitespace)
    return Cleaned(text, max(original - len(text), 0), original, steps)


def clean_pages(text: str, pages: tuple[tuple[int, int], ...]) -> tuple[Cleaned, tuple[tuple[int, int], ...]]:
    """Clean a paged document page by page, so each page's start is known in the cleaned text.

    `pages`: (page number, start offset in `text`); returns the cleaned whole and the pages still
    holding text, with their start offsets in it. No pages: `clean(text)` and ()."""
    from ingest.load import join_pages

    if not pages:
        return clean(text), ()
    ends = [start for _, start in pages[1:]] + [len(text)]
    parts = [(number, clean(text[start:end])) for (number, start), end in zip(pages, ends, strict=True)]
    joined, starts = join_pages([(number, part.text) for number, part in parts if part.text.strip()])
    rules: dict[str, int] = {}
    for _, part in parts:
        for name, n in part.rules.items():
            rules[name] = rules.get(name, 0) + n
    original = sum(part.original_chars for _, part in parts)
    cleaned = Cleaned(joined, max(original - len(joined), 0), original, rules)
    return cleaned, tuple((number, start) for number, start in starts)


def _step(steps: dict[str, int], name: str, text: str, fn: Callable[[str], str]) -> str:
    out = fn(text)
    steps[name] = len(text) - len(out)
    return out


# --------------------------------------------------------------------------- inline HTML

_KNOWN_TAG = re.compile(
    r"</?(?:p|br|div|span|strong|b|em|i|u|font|h[1-6]|li|ul|ol|img|a|table|tbody|thead|tr|td|th"
    r"|section|blockquote|pre|code|sup|sub|hr|center)\b[^<>]*>", re.IGNORECASE)
# inner text is bounded so unclosed tags cost O(n), not O(n^2)
_BOLD = re.compile(r"<(strong|b)\b[^<>]*>(.{0,400}?)</\1\s*>", re.IGNORECASE | re.DOTALL)
_HEADING = re.compile(r"<h([1-6])\b[^<>]*>(.{0,400}?)</h\1\s*>", re.IGNORECASE | re.DOTALL)
_IMG_ALT = re.compile(r"<img\b[^<>]*?\balt\s*=\s*[\"']([^\"']*)[\"'][^<>]*>", re.IGNORECASE)
_OPEN, _CLOSE = "\x01", "\x02"  # marks bold text while tags are replaced


def has_inline_html(text: str) -> bool:
    """True when the text carries several real HTML tags (not just `<s>` or `<<SYS>>` in a prompt)."""
    return len(_KNOWN_TAG.findall(text[:200_000])) >= 3


def html_to_text(text: str) -> str:
    """Inline HTML to light markdown: blocks/br to newlines, h1-6 and bold-only lines to '#', li to '- '."""
    subs = (
        (r"<!--.*?-->|<(script|style)\b[^<>]*>.*?</\1\s*>", ""),
        (r"<br\s*/?>[ \t]*\n?", "\n"),
        (r"<li\b[^<>]*>\s*", "\n- "),
        (r"<tr\b[^<>]*>", "\n|"),
        (r"<t[dh]\b[^<>]*>", " "),
        (r"</t[dh]\s*>", " |"),
        (r"</?(?:p|div|section|blockquote|ul|ol|table|tr|li|pre|center)\b[^<>]*>[ \t]*\n?", "\n"),
        (r"<hr\b[^<>]*>", "\n"),
    )
    text = _HEADING.sub(lambda m: f"\n\n{'#' * int(m.group(1))} {_strip_tags(m.group(2))}\n\n", text)
    text = _IMG_ALT.sub(lambda m: f" {m.group(1).strip()} " if m.group(1).strip() else "", text)
    text = _BOLD.sub(lambda m: f"{_OPEN}{m.group(2)}{_CLOSE}", text)
    for pattern, repl in subs:
        text = re.sub(pattern, repl, text, flags=re.IGNORECASE | re.DOTALL)
    text = html.unescape(_KNOWN_TAG.sub("", text))
    return "\n".join(_bold_line(line.strip()) for line in text.split("\n"))


def _strip_tags(fragment: str) -> str:
    return " ".join(html.unescape(_KNOWN_TAG.sub("", fragment)).split())


def _bold_line(line: str) -> str:
    """A short line that is bold and nothing else is a heading; other bold marks are dropped."""
    stripped = line.strip()
    inner = stripped[1:-1].strip() if stripped.startswith(_OPEN) and stripped.endswith(_CLOSE) else ""
    if inner and _OPEN not in inner and len(inner) <= 60 and "。" not in inner:
        return f"## {inner}"
    return line.replace(_OPEN, "").replace(_CLOSE, "")


# --------------------------------------------------------------------------- rules
# Each rule takes the document's lines and returns the indices of the lines to drop.

_IMAGE_LINE = re.compile(
    r"(?:在这里)?插入图片描述|\[?(?:图片|图像|image|img|photo)\]?|!\[[^\]]*\]\([^)]*\)"
    r"|[\w.\-]+\.(?:png|jpe?g|gif|webp|bmp|svg)(?:\?\S*)?", re.IGNORECASE)
_COUNTER_WORD = r"(?:点赞|赞|收藏|分享|转发|评论|阅读量?|浏览量?|在看|喜欢|举报|views?|likes?|comments?)"
_COUNTER_LINE = re.compile(
    rf"(?:[•·\-*|]?\s*(?:\d[\d.,]*\s*[kKwW万千+]?\s*)?{_COUNTER_WORD}\s*[::]?\s*(?:\d[\d.,]*\s*[kKwW万千+]?)?\s*)+",
    re.IGNORECASE)
_NUMBER_LINE = re.compile(r"[•·\-*]?\s*\d[\d.,]*\s*[kKwW万千+]?")
_PAY_WORD = re.compile(r"打赏|赞赏|红包|微信支付|支付宝|扫码|扫一扫|收款码|余额|充值|实付|支付|付款|钱包|[¥¥]\s*\d")
_RELATED_HEAD = re.compile(
    r"[#\s]*(?:相关(?:文章|推荐|阅读|内容|博文|资源)|推荐阅读|猜你喜欢|延伸阅读|热门(?:文章|推荐)"
    r"|往期(?:推荐|回顾|精选|文章)|更多(?:文章|推荐|精彩)|related (?:articles|posts|reading))\s*[::]?\s*",
    re.IGNORECASE)
_ELLIPSIS_END = re.compile(r"(?:…|\.{3})[….\s]*$")
_FOOTER_STRONG = re.compile(
    r"版权声明\s*[::]|本文链接\s*[::]|原文(?:链接|地址)\s*[::]|转载请(?:注明|联系|保留)|如若转载|禁止转载"
    r"|未经.{0,12}(?:授权|许可|允许).{0,8}转载|本文来自互联网用户投稿|不代表本站(?:立场|观点)"
    r"|侵权.{0,80}删除|CC\s*4\.0\s*BY-SA", re.IGNORECASE)
_FOOTER_WEAK = re.compile(r"版权所有|all rights reserved|copyright\s*(?:©|\(c\)|\d{4})|^\s*©", re.IGNORECASE)
_PROMPT = re.compile(
    r"关注(?:博主|作者|我|公众号|TA)|登录后(?:复制|查看|评论|参与|可)|展开(?:阅读)?全文|阅读全文|^(?:点击)?阅读原文$"
    r"|一键收藏|觉得还不错|对你有帮助[么吗]|记得备注|(?:加入|进入?)[^,,。]{0,8}(?:交流|技术|投稿|读者|粉丝|微信|QQ)群"
    r"|扫码关注|长按(?:识别)?二维码|成就一亿技术人|自动成为.{0,12}粉丝|^(?:提交|举报|分享|复制)$",
    re.IGNORECASE)
_POLL_OPTION = re.compile(r"[•·\-*]?\s*(?:非常)?(?:没|有)?(?:帮助|用)?|[•·\-*]?\s*一般")
_EDIT_NOTE = re.compile(r"本帖最后由\s*\S+\s*于\s*[\d\-/: ]+\s*编辑")
_PAGER = re.compile(r"页\s*[::]?(?:\s*\[?\d+\]?)*|(?:\s*\[\d+\])+(?:\s*\d+)*(?:\s*下一页)?")


def image_placeholders(lines: list[str]) -> set[int]:
    """Lines that only stand for a picture: placeholders, bare image file names, icon-only lines."""
    return {i for i, line in enumerate(lines) if 0 < len(line.strip()) <= 200 and (
        _IMAGE_LINE.fullmatch(line.strip()) or all(_is_icon(c) for c in line.strip()))}


def _is_icon(char: str) -> bool:
    """Whitespace, emoji and other non-ASCII symbols (ASCII '`', '^' are Sk too, but are not icons)."""
    return char.isspace() or char in "\ufe0f\u200d" or ord(char) > 127 and unicodedata.category(char) in ("So", "Sk")


def counters(lines: list[str]) -> set[int]:
    """Like/share/favorite/view counters, and bare numbers right next to them."""
    hits = {i for i, line in enumerate(lines) if 0 < len(line.strip()) <= 60 and _COUNTER_LINE.fullmatch(line.strip())}
    for i in sorted(hits):
        for j in _neighbours(lines, i):
            if _NUMBER_LINE.fullmatch(lines[j].strip()):
                hits.add(j)
    return hits


def _neighbours(lines: list[str], i: int) -> list[int]:
    """The nearest non-blank line before and after line i."""
    return [j for j in (_prev_filled(lines, i), _next_filled(lines, i)) if j is not None]


def _prev_filled(lines: list[str], i: int) -> int | None:
    return next((j for j in range(i - 1, -1, -1) if lines[j].strip()), None)


def _next_filled(lines: list[str], i: int) -> int | None:
    return next((j for j in range(i + 1, len(lines)) if lines[j].strip()), None)


def tipping_blocks(lines: list[str]) -> set[int]:
    """Runs of short tipping/red-packet/payment lines (>= 3, mostly UI labels) and the short lines between."""
    seeds = [i for i, line in enumerate(lines) if len(line.strip()) <= 40 and _PAY_WORD.search(line)]
    drop: set[int] = set()
    cluster: list[int] = []
    for i in [*seeds, None]:
        gap = [] if not cluster or i is None else [j for j in range(cluster[-1] + 1, i) if lines[j].strip()]
        if i is not None and cluster and len(gap) <= 4 and all(len(lines[j].strip()) <= 30 for j in gap):
            cluster.append(i)
            continue
        labels = sum(len(lines[j].strip()) <= 12 for j in cluster)
        if len(cluster) >= 3 and labels * 2 >= len(cluster):
            drop.update(range(cluster[0], cluster[-1] + 1))
        cluster = [i] if i is not None else []
    return drop


def related_blocks(lines: list[str]) -> set[int]:
    """A 'related articles' heading and the run of titles, links and teasers after it (>= 2 items)."""
    drop: set[int] = set()
    for i, line in enumerate(lines):
        if not _RELATED_HEAD.fullmatch(line):
            continue
        run, items = [i], 0
        for j in range(i + 1, len(lines)):
            if lines[j].strip() and not _related_item(lines, j, items):
                break
            run.append(j)
            items += bool(lines[j].strip())
        if items >= 2:
            drop.update(run)
    return drop


def _related_item(lines: list[str], j: int, items: int) -> bool:
    """A title, a link, a '…' teaser, or (once the list is established) a teaser between two titles."""
    item = lines[j].strip()
    if item.startswith("#"):  # a markdown heading ends the list
        return False
    if _ELLIPSIS_END.search(item) or _title_like(item):
        return True
    before, after = _prev_filled(lines, j), _next_filled(lines, j)
    title_before = before is not None and _title_like(lines[before].strip()) and not _ELLIPSIS_END.search(lines[before])
    return items >= 4 and title_before and (after is None or _title_like(lines[after].strip()))


def _title_like(line: str) -> bool:
    """Short and not a sentence (titles carry no '。' and do not end like one)."""
    return len(line) <= 80 and "。" not in line and not re.search(r"[!?;!?;]$", line)


def copyright_footers(lines: list[str]) -> set[int]:
    """Copyright, 'original link', reprint and takedown notices."""
    return {i for i, line in enumerate(lines) if len(line) <= 300 and _FOOTER_STRONG.search(line)
            or len(line.strip()) <= 60 and _FOOTER_WEAK.search(line)}


def ui_prompts(lines: list[str]) -> set[int]:
    """Short login/follow/expand/poll prompts, and the option lines of a 'was this helpful?' poll."""
    drop = {i for i, line in enumerate(lines) if len(line.strip()) <= 40 and _PROMPT.search(line.strip())}
    for i in sorted(drop):
        if re.search(r"对你有帮助[么吗]", lines[i]):
            j = i + 1
            while j < len(lines) and (not lines[j].strip() or _POLL_OPTION.fullmatch(lines[j].strip())):
                drop.add(j)
                j += 1
    return drop


def forum_furniture(lines: list[str]) -> set[int]:
    """Forum 'last edited by' notes and page selectors ('页: [1] 2 3')."""
    drop = {i for i, line in enumerate(lines) if _EDIT_NOTE.fullmatch(line.strip())}
    for i, line in enumerate(lines):
        if re.fullmatch(r"页\s*[::]", line.strip()) or re.fullmatch(r"页\s*[::]\s*\[\d+\].*", line.strip()):
            drop.add(i)
            drop.update(j for j in range(i + 1, min(i + 3, len(lines))) if _PAGER.fullmatch(lines[j].strip()))
    return drop


RULES: tuple[tuple[str, Callable[[list[str]], set[int]]], ...] = (
    ("image_placeholders", image_placeholders),
    ("counters", counters),
    ("tipping", tipping_blocks),
    ("related", related_blocks),
    ("copyright", copyright_footers),
    ("prompts", ui_prompts),
    ("forum", forum_furniture),
)


# --------------------------------------------------------------------------- whitespace

def tidy_whitespace(text: str) -> str:
    """Squash space runs (indentation and code fences kept), strip line ends, <= 1 blank line in a row."""
    out, fenced = [], False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if fenced or line.lstrip().startswith("```"):
            out.append(line.rstrip())
            continue
        body = line.lstrip()
        indent = line[: len(line) - len(body)].replace("\t", "    ")
        out.append((indent + squash_spaces(body)).rstrip() if body else "")
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


# --------------------------------------------------------------------------- table of contents

_TOC_MARK = re.compile(
    r"\s*(?:[-*+•·]\s*)?(?:\[[ xX]\]\s*)?(?:\d+(?:\.\d+)*[.、)]?\s|[一二三四五六七八九十]+[、.]|第\S{1,3}[章节篇部]"
    r"|\(\d+\)|[-*+•·]\s)")
_TOC_STRONG = re.compile(r"\[[ xX]\]|^\s*(?:目录|contents)\s*[::]?\s*$|(?:\.{4,}|…{2,}|·{4,})\s*\d+\s*$",
                         re.IGNORECASE)
_LINK_LINE = re.compile(r"\s*(?:[-*+•·]\s*)?(?:\[[^\]]+\]\([^)]+\)|https?://\S+)\s*")


def is_toc_like(text: str) -> bool:
    """Heuristic: a block mostly of short numbered/checkbox heading-like lines or bare links (a TOC)."""
    lines = [line for line in text.split("\n") if line.strip()]
    if len(lines) < 4:
        return False
    entries = strong = 0
    for line in lines:
        if _LINK_LINE.fullmatch(line):
            entries, strong = entries + 1, strong + 1
        elif len(line.strip()) <= 60 and not re.search(r"[。;;]", line) and (
                _TOC_MARK.match(line) or _TOC_STRONG.search(line)):
            entries += 1
            strong += bool(_TOC_STRONG.search(line))
    if entries < 0.7 * len(lines):
        return False
    short = sum(len(line.strip()) for line in lines) / len(lines) <= 30
    return strong >= 0.3 * len(lines) or (len(lines) >= 8 and short)
