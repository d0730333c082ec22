"""Choose the refusal thresholds from a recorded answers run (`data/qa/configs/record.toml`).

`python -m bench.refusal_thresholds eval-out/after.record.jsonl` replays every recorded question under
each (answerable_min_p, evidence_min_score) pair: a question whose P(yes) or best evidence score is below
the threshold would have been refused before generating (both are computed before the LLM answers, so
the replay is exact for those two steps); everything else keeps its recorded outcome. Prints refusal
rate on unanswerable, false refusals and key-phrase recall on answerable, best pairs first.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path

REFUSED_AFTER_CHECK = ("unsupported", "uncited")  # outcomes of rag.check.check_answer, replayed from the draft


def _headings_of(kb: str) -> Callable[[dict], tuple[str, ...]]:
    """For rows recorded before evidence carried its headings: the headings of the KB's chunks that hold a
    recorded evidence entry's pieces."""
    from rag.retrieve import open_retriever
    from rag.settings import load_settings

    chunks = open_retriever(load_settings().model_copy(update={"kb": kb})).state.state.chunks

    def headings(entry: dict) -> tuple[str, ...]:
        hold = [c for c in chunks if c.doc_id == entry["doc_id"]
                and any(c.start <= a < c.end for a, _ in entry["pieces"])]
        return tuple(dict.fromkeys(h for c in hold for h in c.heading_path))

    return headings


def recorded_sources(row: dict, headings: Callable[[dict], tuple[str, ...]] = lambda e: ()) -> list:
    """The prompt's sources of a recorded row, rebuilt from its evidence entries (rag.prompt.Source)."""
    from rag.prompt import Source
    from rag.records import Chunk

    return [Source(e["n"], (Chunk("", e["doc_id"], e["text"], "", heading_path=tuple(e.get("headings") or headings(e))),),
                   e.get("title", ""), "", e["text"], e["n"]) for e in row["evidence"]]


def recheck(rows: list[dict], kb: str | None = None) -> list[dict]:
    """Rows whose answers pass the current citation/support step again (rag.check.check_answer on the recorded
    model text), so a change of the support rules is measured without generating again."""
    from rag.check import check_answer
    from rag.embed import load_embedder
    from rag.eval.qa import answer_phrase_recall
    from rag.settings import load_settings

    embed = load_embedder(load_settings()).encode_queries
    out = []
    headings = _headings_of(kb) if kb else lambda e: ()
    for r in rows:
        # the model's text (rows recorded before session 22 kept it only when the check refused the answer)
        text = r["draft"] or r["answer"]
        if r["refused"] and r["refusal_reason"] not in REFUSED_AFTER_CHECK:
            out.append(r)
            continue
        checked = check_answer(text, recorded_sources(r, headings), embed, r["standalone_question"])
        refused = bool(checked.refusal)
        recall = None if r["verdicts"]["phrase_recall"] is None else \
            0.0 if refused else answer_phrase_recall(checked.text, r["answers"]) if "answers" in r else r["verdicts"]["phrase_recall"]
        out.append(r | {"refused": refused, "refusal_reason": checked.refusal, "answer": checked.text,
                        "cited_now": [c.n for c in checked.citations],
                        "verdicts": r["verdicts"] | {"phrase_recall": recall}})
    return out


def replay(rows: list[dict], min_p: float, min_score: float, answer_type: bool = False) -> dict:
    """Outcome rates if the chain had refused below these thresholds (and, with `answer_type`, when the
    question asks for a year or quantity its recorded evidence does not state: rag.answer_type)."""
    from rag.answer_type import missing_answer_type

    def refused(r: dict) -> bool:
        early = (r["answerable_p"] is not None and r["answerable_p"] < min_p) or \
                (r["evidence_score"] is not None and r["evidence_score"] < min_score) or \
                (answer_type and bool(missing_answer_type(r["question"], " ".join(e["text"] for e in r["evidence"]))))
        return early or r["refused"]

    answerable = [r for r in rows if r["answerable"]]
    unanswerable = [r for r in rows if not r["answerable"]]
    recalls = [0.0 if refused(r) else r["verdicts"]["phrase_recall"] for r in answerable
               if r["verdicts"]["phrase_recall"] is not None]
    return {"min_p": min_p, "min_score": min_score,
            "refusal": statistics.mean(refused(r) for r in unanswerable) if unanswerable else None,
            "false_refusal": statistics.mean(refused(r) for r in answerable) if answerable else None,
            "phrase_recall": statistics.mean(recalls) if recalls else None}


def citation_precision(rows: list[dict], qa: Path, kb: str) -> float | None:
    """Share of the (rechecked) citations of answered answerable questions whose evidence pieces hold a key
    passage (rag.eval's RelevanceJudge over the KB's documents)."""
    from rag.eval.qa import RelevanceJudge, load_qa
    from rag.records import Chunk
    from rag.retrieve import open_retriever
    from rag.settings import load_settings

    retriever = open_retriever(load_settings().model_copy(update={"kb": kb}))
    documents = {d: record.text for d, record in retriever.state.documents.items()}
    judge, items = RelevanceJudge(documents), {i.id: i for i in load_qa(qa)}
    verdicts = []
    for r in rows:
        item = items[r["id"]]
        if r["refused"] or not r["answerable"] or not (item.evidence or item.doc_ids):
            continue
        sources = {e["n"]: e for e in r["evidence"]}
        for n in r.get("cited_now", [c["n"] for c in r["citations"]]):
            e = sources[n]
            doc = documents.get(e["doc_id"], "")
            verdicts.append(any(judge.relevant(item, Chunk("", e["doc_id"], doc[a:b], "", start=a, end=b), restated=True)
                                for a, b in e["pieces"]))
    return statistics.mean(verdicts) if verdicts else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("rows", type=Path)
    parser.add_argument("--max-false", type=float, default=0.10, help="false-refusal ceiling for the best pairs")
    parser.add_argument("--qa", type=Path, help="the QA file of the run (key phrases, to re-score rechecked answers)")
    parser.add_argument("--recheck", action="store_true", help="re-run the support step on the recorded model text")
    parser.add_argument("--answer-type", action="store_true", help="also refuse by rag.answer_type in the grid")
    parser.add_argument("--kb", help="with --qa: also the citation precision of the (rechecked) answers over this KB")
    parser.add_argument("--save", type=Path, help="write the (rechecked) rows here, one JSON object a line")
    args = parser.parse_args(argv)
    rows = [json.loads(line) for line in args.rows.read_text(encoding="utf-8").splitlines() if line.strip()]
    if args.qa:
        from rag.eval.qa import load_qa

        answers = {i.id: i.answers for i in load_qa(args.qa)}
        rows = [r | {"answers": answers.get(r["id"], [])} for r in rows]
    if args.recheck:
        rows = recheck(rows, args.kb)
    if args.save:
        args.save.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    grid = [replay(rows, p / 100, s / 100, args.answer_type) for p in range(0, 100, 5) for s in range(0, 100, 2)]
    ok = sorted((g for g in grid if g["false_refusal"] <= args.max_false), key=lambda g: (-(g["refusal"] or 0), -(g["phrase_recall"] or 0)))
    print(f"{len(rows)} rows; recorded: {replay(rows, 0, 0)}")
    print(f"defaults (answerable_min_p 0.4): {replay(rows, 0.4, 0)}; with the answer-type rule: "
          f"{replay(rows, 0.4, 0, answer_type=True)}")
    if args.kb and args.qa:
        print(f"citation precision: {citation_precision(rows, args.qa, args.kb):.3f}")
    print("| answerable_min_p | evidence_min_score | refusal (unanswerable) | false refusal | key-phrase recall |")
    print("| --- | --- | --- | --- | --- |")
    for g in ok[:12]:
        print(f"| {g['min_p']:.2f} | {g['min_score']:.2f} | {g['refusal']:.3f} | {g['false_refusal']:.3f} | {g['phrase_recall']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
