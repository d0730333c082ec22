"""`python -m rag.ask [--kb NAME] [--index-dir DIR] [--json] [--no-stream] "question"`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

EXAMPLE = """examples:
  python -m rag.ask --kb sample "默认端口是多少？"
  python -m rag.ask --kb notes --json "What is the difference between MQA and GQA?"
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(prog="python -m rag.ask", description="Answer a question from a knowledge base, with sources.",
                                     epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("question")
    parser.add_argument("--kb")
    parser.add_argument("--index-dir", type=Path)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--no-stream", action="store_true", help="print the answer when it is complete")
    return parser.parse_args(argv)


def answer_json(ans) -> dict:
    """The stable JSON shape of an answer."""
    return {
        "question": ans.question,
        "answer": ans.text,
        "refused": ans.refused,
        "standalone_question": ans.standalone_question,
        "search_query": ans.search_query,
        "refusal_reason": ans.refusal_reason,
        "answer_mode": ans.answer_mode,
        "notice": ans.notice,
        "answerable_p": ans.answerable_p,
        "citations": [
            {"n": c.n, "doc_id": c.chunk.doc_id, "source": c.chunk.source, "heading": c.chunk.heading,
             "page": c.page, "page_end": c.page_end,
             "start": c.chunk.start, "end": c.chunk.end, "text": c.chunk.text, "supported": c.supported,
             "evidence": c.quotes()}
            for c in ans.citations
        ],
        "evidence": [{"n": s.n, "doc_id": s.doc_id, "heading": s.heading, "text": s.text,
                      "pieces": [list(p) for p in s.pieces]} for s in ans.evidence],
        "unsupported_sentences": ans.unsupported_sentences,
        "removed_citations": ans.removed_citations,
        "hits": [{**{k: v for k, v in asdict(h).items() if k != "chunk"}, "chunk_id": h.chunk.id, "doc_id": h.chunk.doc_id,
                  "heading": h.chunk.heading, "page": h.chunk.page, "page_end": h.chunk.page_end, "text": h.chunk.text}
                 for h in ans.hits],
        "timings_ms": {k: ans.timings_ms.get(k, 0.0) for k in ("retrieve", "rerank", "evidence", "first_token", "total")}
        | ans.timings_ms,
        "usage": ans.usage,
    }


def print_sources(ans, out=None) -> None:
    """The sources block under a text answer."""
    out = out or sys.stdout
    if ans.citations:
        print("\nSources:", file=out)
        for c in ans.citations:
            flag = "" if c.supported else "  (not supported by the cited text)"
            where = f"{c.chunk.page_label}, " if c.page is not None else ""
            print(f"  [{c.n}] {c.chunk.doc_id}  {c.chunk.heading}  {where}chars {c.chunk.start}-{c.chunk.end}{flag}", file=out)
    if ans.unsupported_sentences:
        print("\nRemoved (not supported by the cited sources):", file=out)
        for sentence in ans.unsupported_sentences:
            print(f"  - {sentence}", file=out)
    if not ans.citations and ans.hits:
        print("\nClosest sources:", file=out)
        for h in ans.hits[:3]:
            print(f"  - {h.chunk.doc_id}  {h.chunk.heading}", file=out)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 when the LLM or the index is unavailable)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from rag import store
    from rag.chain import answer
    from rag.llm import LLMError, client_from_settings
    from rag.rerank import load_reranker
    from rag.retrieve import open_retriever
    from rag.settings import load_settings

    settings = load_settings(args.config, kb=args.kb, index_dir=args.index_dir)
    try:
        retriever = open_retriever(settings)
        llm = client_from_settings(settings)
    except (store.KBNotFound, store.IndexMismatch, LLMError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stream = not args.json and not args.no_stream
    on_token = (lambda piece: print(piece, end="", flush=True)) if stream else None

    def on_evidence(sources) -> None:  # printed before the LLM starts
        print("Evidence:")
        for s in sources:
            print(f"  [{s.n}] {s.doc_id}  {s.heading}\n      {' '.join(s.text.split())}")
        print(flush=True)

    try:
        ans = answer(args.question, settings=settings, retriever=retriever, llm=llm,
                     reranker=load_reranker(settings), on_token=on_token, on_evidence=on_evidence if stream else None)
    except LLMError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(answer_json(ans), ensure_ascii=False, indent=1))
        return 0
    if ans.notice:
        print(f"note: {ans.notice} - answered with the evidence sentences", file=sys.stderr)
    if stream:
        print()
        if ans.refused or ans.removed_citations or ans.unsupported_sentences or ans.answer_mode == "extractive":
            print("\n" + ans.text)  # the shown text differs from the raw stream
    else:
        print(ans.text)
    print_sources(ans)
    return 0


if __name__ == "__main__":
    sys.exit(main())
