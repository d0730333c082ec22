"""Benchmark sets: BEIR folders and SQuAD-format files (CMRC2018) turned into the QA format."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from rag.eval.qa import QAItem

_SENTENCE_END = re.compile(r"[。！？!?；;]")


def load_beir(folder: Path, split: str = "test") -> tuple[list[QAItem], dict[str, dict[str, int]]]:
    """(questions, qrels) of a BEIR folder: queries.jsonl + qrels/<split>.tsv."""
    qrels: dict[str, dict[str, int]] = {}
    with (folder / "qrels" / f"{split}.tsv").open(encoding="utf-8") as fh:
        for row in csv.reader(fh, delimiter="\t"):
            if len(row) < 3 or row[0] == "query-id":
                continue
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    queries = {}
    with (folder / "queries.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            q = json.loads(line)
            queries[str(q["_id"])] = q["text"]
    items = [QAItem(id=qid, question=queries[qid], doc_ids=sorted(docs)) for qid, docs in qrels.items() if qid in queries]
    return items, qrels


def _sentence_around(text: str, start: int, end: int) -> str:
    """The sentence of `text` that holds [start, end) (the evidence for an extractive answer)."""
    left = max((m.end() for m in _SENTENCE_END.finditer(text, 0, start)), default=0)
    right_match = _SENTENCE_END.search(text, end)
    right = right_match.end() if right_match else len(text)
    return text[left:right].strip()


def import_squad(path: Path, out_dir: Path) -> tuple[Path, Path, int]:
    """Write `corpus.jsonl` (one document per paragraph) and `qa.jsonl`; returns (corpus, qa, n)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))["data"]
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus, qa = out_dir / "corpus.jsonl", out_dir / "qa.jsonl"
    n = 0
    with corpus.open("w", encoding="utf-8") as cf, qa.open("w", encoding="utf-8") as qf:
        for article in data:
            for p_index, para in enumerate(article["paragraphs"]):
                doc_id = para.get("id") or f"{article.get('id', 'doc')}-{p_index}"
                context = para["context"]
                title = article.get("title", "")
                cf.write(json.dumps({"_id": doc_id, "title": title, "text": context}, ensure_ascii=False) + "\n")
                for q in para["qas"]:
                    answers = [a["text"] for a in q["answers"] if a["text"].strip()]
                    first = q["answers"][0] if q["answers"] else None
                    evidence = [_sentence_around(context, first["answer_start"], first["answer_start"] + len(first["text"]))] if first else []
                    item = {"id": q["id"], "question": q["question"], "answers": sorted(set(answers)), "evidence": evidence,
                            "doc_ids": [doc_id], "answerable": bool(answers), "reference": answers[0] if answers else ""}
                    qf.write(json.dumps(item, ensure_ascii=False) + "\n")
                    n += 1
    return corpus, qa, n
