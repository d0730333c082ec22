"""Reading evidence sentences under their heading: variants and the scoring time they cost.

`python -m bench.evidence_heading [--kb notes] [--qa data/qa/llm-notes-zh.dev.jsonl]` scores the candidate
sentences of each answerable question (`rag.evidence.candidate_sentences`, its heading rule) read alone, and
under their heading for all of them or the best k, plus the cheaper variants that were tried and dropped
(a heading vector added to the sentence vector, a heading-cosine bonus, neighbour smoothing). Prints the
key-phrase recall of the packed evidence at the default budget and of the best two sentences (what an
extractive answer quotes), and sentence-scoring p50 with a cold cache
for k = 0, 8, 12, 16 (`rag.evidence.score_sentences`).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from rag import evidence as ev
from rag.eval.qa import answer_phrase_recall, load_qa
from rag.prompt import format_sources
from rag.retrieve import open_retriever, with_history
from rag.settings import load_settings


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _neighbours(sentences: list, base: np.ndarray, beta: float) -> np.ndarray:
    out = base.copy()
    for i, s in enumerate(sentences):
        near = [base[j] for j in (i - 1, i + 1) if 0 <= j < len(sentences) and sentences[j].group == s.group]
        if near:
            out[i] += beta * float(np.mean(near))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kb", default="notes")
    parser.add_argument("--qa", type=Path, default=Path("data/qa/llm-notes-zh.dev.jsonl"))
    parser.add_argument("--timed", type=int, default=40, help="questions timed per k")
    args = parser.parse_args(argv)
    settings = load_settings(None, kb=args.kb)
    retriever = open_retriever(settings)
    docs, emb = retriever.state.documents, retriever.embedder
    rows = []
    for item in [i for i in load_qa(args.qa) if i.answerable and i.answers]:
        query = with_history(item.question, item.history)
        hits = retriever.search(query, k=settings.top_k)
        cands = ev.candidate_sentences(hits, docs)
        if not cands:
            rows.append((item, hits, cands, None))
            continue
        q = emb.encode_queries([query])[0]
        read = [f"{s.header.text}\n{s.text}" if s.header else s.text for s in cands]
        alone = emb.encode_passages_cached(read)
        under = emb.encode_passages_cached([f"{s.heading}\n{t}" if s.heading and s.heading not in t else t
                                            for s, t in zip(cands, read, strict=True)])
        heading = emb.encode_passages_cached([s.heading or t for s, t in zip(cands, read, strict=True)])
        has = np.array([bool(s.heading) for s in cands])
        prior = np.array([ev.RANK_WEIGHT / s.rank for s in cands])
        rows.append((item, hits, cands, (alone @ q, under @ q, heading @ q, _unit(alone), _unit(heading), q, has, prior)))

    def recall(name: str, score) -> None:
        found, top_two = [], []
        for item, hits, cands, m in rows:
            if not cands:
                found.append(0.0)
                top_two.append(0.0)
                continue
            scored = [replace(s, score=float(x)) for s, x in zip(cands, score(cands, *m), strict=True)]
            found.append(answer_phrase_recall(format_sources(ev.pack(scored, hits, docs, settings.evidence_tokens).sources),
                                              item.answers))
            best = sorted(scored, key=lambda s: -s.score)[:2]  # what an extractive answer quotes
            top_two.append(answer_phrase_recall(" ".join(s.text for s in best), item.answers))
        print(f"| {name} | {statistics.mean(found):.3f} | {statistics.mean(f == 1 for f in found):.3f} | "
              f"{statistics.mean(top_two):.3f} |")

    def best_k(k: int):
        def score(c, a, u, h, A, H, q, has, prior):
            top = np.argsort(-(a + prior), kind="stable")[:k]
            out = a.copy()
            out[top] = np.maximum(a[top], u[top])
            return out + prior
        return score

    print(f"{len(rows)} answerable questions, budget {settings.evidence_tokens}\n")
    print("| sentence read | key-phrase recall | all phrases | top two sentences |\n| --- | --- | --- | --- |")
    recall("alone", lambda c, a, u, h, A, H, q, has, prior: a + prior)
    recall("alone or under its heading, every sentence", lambda c, a, u, h, A, H, q, has, prior: np.maximum(a, u) + prior)
    for k in (8, 12, 16):
        recall(f"alone or under its heading, the best {k}", best_k(k))
    for w in (0.3, 0.5, 1.0):
        recall(f"alone or normalize(sentence + {w} x heading) vector", lambda c, a, u, h, A, H, q, has, prior, w=w:
               np.maximum(a, np.where(has, _unit(A + w * H) @ q, a)) + prior)
    for b in (0.1, 0.2, 0.3):
        recall(f"alone + {b} x cosine(question, heading)", lambda c, a, u, h, A, H, q, has, prior, b=b:
               a + b * np.where(has, h, 0.0) + prior)
    for b in (0.1, 0.3):
        recall(f"alone + {b} x mean of the neighbours' cosines", lambda c, a, u, h, A, H, q, has, prior, b=b:
               _neighbours(c, a, b) + prior)

    timed = [(with_history(item.question, item.history), cands) for item, _, cands, _ in rows[: args.timed] if cands]
    if not timed:
        return 0
    default = ev.HEADED_SENTENCES
    print("\n| sentences read under their heading | scoring p50 (cold cache) |\n| --- | --- |")
    for k in (0, 8, 12, 16):
        ev.HEADED_SENTENCES = k
        ms = []
        for query, cands in timed:
            emb.clear_cache()
            t = time.perf_counter()
            ev.score_sentences(query, cands, emb)
            ms.append((time.perf_counter() - t) * 1000)
        print(f"| {k} | {statistics.median(ms):.0f} ms |")
    ev.HEADED_SENTENCES = default
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
