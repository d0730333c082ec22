"""The model's answer text made readable for the citation step: habits of a small model, undone before its
markers are read (rag.cite.parse_citations).

- Markers in words ("[source 2]", "[资料2]") become numbers; letter-number debris after a marker ("[1][P1]") goes.
- The evidence's gap mark, copied: packed evidence joins pieces that are not adjacent with " … " (rag.evidence.GAP),
  and the model copies it between sentences ("…有益。 … 4. 可扩展性:…"). There it is no text: a list item it opens
  starts a line, and "4." is read as the item's number again, not as a number the sources must hold.
- Markers written before the sentence they cite ("[1] The key steps of PEFT are: …", "… an image. [2] Multi-query
  …"): when the answer opens with a marker, each marker that opens a sentence moves after that sentence's stop,
  where the check reads a sentence's markers ("句子。[1]").
"""

from __future__ import annotations

import re

from rag.evidence import GAP
from rag.facts import LIST_NUMBER
from rag.text import CITATION_MARK, SENTENCE

_WORDED_MARK = re.compile(r"[\[【［]\s*(?:source|src|ref|doc|资料|来源|文档|参考)\s*(\d{1,3})\s*[\]】］]", re.I)
_DEBRIS = re.compile(r"(?<=[\]】］])\s*[\[【［]\s*[A-Za-z]{1,3}\s*\d{1,3}\s*[\]】］]")
_STOP = r"[。！？.!?:：]"
_COPIED_GAP = re.compile(rf"(?:(?<={_STOP})|(?<=[\]】］])|^)[ \t]*{re.escape(GAP.strip())}[ \t]+(?=\S)", re.M)
_MARKS = rf"(?:{CITATION_MARK.pattern}[ \t]*)+"
_OPENING_MARKS = re.compile(rf"(?:^|(?<={_STOP})[ \t]+)[ \t]*({_MARKS})(?=\S)", re.M)
_OPENS_WITH_MARK = re.compile(rf"\s*{CITATION_MARK.pattern}")


def tidy(text: str) -> str:
    """`text` with worded markers as numbers, debris, copied gap marks and opening markers handled (module doc)."""
    text = _DEBRIS.sub("", _WORDED_MARK.sub(r"[\1]", text))
    text = _COPIED_GAP.sub(lambda m: "\n" if LIST_NUMBER.match(m.string[m.end():]) else " ", text)
    return _markers_after(text) if _OPENS_WITH_MARK.match(text) else text


def _markers_after(text: str) -> str:
    """Each marker run that opens a sentence moved after that sentence's stop (before its line break)."""
    out, at = [], 0
    for m in _OPENING_MARKS.finditer(text):
        if m.start() < at:  # inside a sentence already moved
            continue
        body = SENTENCE.match(text, m.end())
        end = body.end() if body else len(text)
        sentence = text[m.end():end]
        tail = sentence[len(sentence.rstrip()):]  # the line break or space after the stop stays after the marker
        out.append(text[at:m.start(1)] + sentence.rstrip() + m.group(1).strip() + tail)
        at = end
    return "".join(out) + text[at:]
