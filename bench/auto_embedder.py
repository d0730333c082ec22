"""`embedder = "auto"` on an English corpus: ingest throughput and SciFact quality, auto (bge-small-en) vs e5.

    flock /tmp/rag-bench.lock .venv/bin/python -m bench.auto_embedder --docs 200

A SciFact subset: the abstracts judged relevant to the first test claims (up to half of `--docs`), filled up
with other abstracts in corpus order. The same corpus.jsonl is ingested into a fresh knowledge base with the
default settings ("auto", which picks bge-small-en for it) and with `embedder = bundled:multilingual-e5-small`,
alternately, `--rounds` times each; both models are loaded first, so model loading is excluded. Then the
claims whose judged abstracts are all in the subset are searched (nDCG@10, dense and hybrid), and the Chinese
translations of 19 of them (data/qa/scifact-zh-claims.jsonl, translated by hand) as they come, untranslated:
a Chinese question over an English knowledge base when the chain's query translation is off or unavailable,
and with `--translate` as the chain searches them (question + the bundled LLM's English translation), and by
the translation alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, SCIFACT, quiet_libraries, table

CONFIGS = ("auto", "e5")
ZH_CLAIMS = REPO / "data" / "qa" / "scifact-zh-claims.jsonl"


def subset(n_docs: int, out: Path) -> tuple[list, dict]:
    """Write a BEIR corpus.jsonl of `n_docs` abstracts to `out`; (the claims fully judged in it, their qrels)."""
    from rag.eval.datasets import load_beir

    items, qrels = load_beir(SCIFACT.parent, "test")
    rows = {str(d["_id"]): d for d in map(json.loads, SCIFACT.read_text(encoding="utf-8").splitlines())}
    chosen: dict[str, None] = {}
    for item in items:
        relevant = [d for d in qrels[item.id] if d in rows]
        if len(chosen) + len(relevant) > n_docs // 2:
            break
        chosen.update(dict.fromkeys(relevant))
    for doc_id in rows:
        if len(chosen) >= n_docs:
            break
        chosen.setdefault(doc_id)
    out.mkdir(parents=True, exist_ok=True)
    (out / "corpus.jsonl").write_text("".join(json.dumps(rows[d]) + "\n" for d in chosen), encoding="utf-8")
    judged = [i for i in items if all(d in chosen for d in qrels[i.id])]
    return judged, {i.id: qrels[i.id] for i in judged}


def settings_for(config: str, index_dir: Path):
    """The default settings ("auto") or the same with e5 named."""
    from rag.settings import BUNDLED_EMBEDDER, Settings

    extra = {"embedder": BUNDLED_EMBEDDER} if config == "e5" else {}
    return Settings(index_dir=index_dir, kb=config, **extra)


def ingest_once(config: str, corpus: Path, index_dir: Path) -> dict:
    """One fresh ingest: chunks, seconds without model load, the embedder the manifest records."""
    from ingest.pipeline import run_ingest
    from rag import store

    settings = settings_for(config, index_dir)
    t = time.perf_counter()
    report = run_ingest([corpus], settings, rebuild=True, progress=False)
    seconds = time.perf_counter() - t - report.stage_s.get("model_load", 0.0)
    return {"chunks": report.chunks_total, "s": seconds, "embed_s": report.stage_s.get("embed", 0.0),
            "embedder": store.peek_manifest(settings).embedder.id}


def chinese(items: list) -> list:
    """The claims of ZH_CLAIMS that are among `items`, with their Chinese text as the question."""
    from dataclasses import replace

    zh = {row["id"]: row["question"] for row in map(json.loads, ZH_CLAIMS.read_text(encoding="utf-8").splitlines())}
    return [replace(item, question=zh[item.id]) for item in items if item.id in zh]


def quality(config: str, index_dir: Path, sets: dict[str, tuple[list, dict | None]], qrels: dict) -> dict[str, float]:
    """nDCG@10 of each set of fully judged claims (items, prepared queries or None), dense and hybrid."""
    from rag.eval.qa import RelevanceJudge
    from rag.eval.retrieval import evaluate_mode
    from rag.retrieve import open_retriever

    retriever = open_retriever(settings_for(config, index_dir))
    judge = RelevanceJudge({})
    return {f"{name} {mode}": evaluate_mode(retriever, items, mode, judge, qrels, progress=False, queries=queries)[0]
            ["ndcg@10"] for name, (items, queries) in sets.items() for mode in ("dense", "hybrid")}


def translations(items: list, index_dir: Path) -> dict[str, str]:
    """The search query the chain makes of each Chinese claim over the English knowledge base (the same for both)."""
    from rag.eval.__main__ import translated_queries
    from rag.retrieve import open_retriever

    settings = settings_for("auto", index_dir)
    return translated_queries(items, open_retriever(settings), settings)


def main(argv: list[str] | None = None) -> int:
    """Print the throughput and quality tables."""
    parser = argparse.ArgumentParser(prog="python -m bench.auto_embedder", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=200, help="abstracts in the subset (default 200)")
    parser.add_argument("--rounds", type=int, default=2, help="ingests per configuration, alternating (default 2)")
    parser.add_argument("--translate", action="store_true", help="also the Chinese claims with the LLM's translation")
    args = parser.parse_args(argv)
    quiet_libraries()
    from rag.embed import load_embedder
    from rag.settings import BUNDLED_EMBEDDER, BUNDLED_EN_EMBEDDER, Settings

    for name in (BUNDLED_EN_EMBEDDER, BUNDLED_EMBEDDER):  # loaded once, outside the timings
        load_embedder(Settings(embedder=name))
    with tempfile.TemporaryDirectory(prefix="rag-bench-auto-") as tmp:
        work = Path(tmp)
        items, qrels = subset(args.docs, work / "scifact")
        runs: dict[str, list[dict]] = {c: [] for c in CONFIGS}
        for r in range(args.rounds):
            for config in CONFIGS if r % 2 == 0 else CONFIGS[::-1]:
                runs[config].append(ingest_once(config, work / "scifact" / "corpus.jsonl", work / "index"))
                print(f"round {r + 1} {config}: {runs[config][-1]}", file=sys.stderr)
        sets = {"en": (items, None), "zh": (chinese(items), None)}
        if args.translate:
            queries = translations(sets["zh"][0], work / "index")
            sets["zh+translation"] = (sets["zh"][0], queries)
            sets["translation only"] = (sets["zh"][0], {i.id: queries[i.id].removeprefix(i.question).strip() or i.question
                                                         for i in sets["zh"][0]})  # untranslated: the question
        scores = {c: quality(c, work / "index", sets, qrels) for c in CONFIGS}
    best = {c: min(runs[c], key=lambda run: run["s"]) for c in CONFIGS}
    rate = {c: best[c]["chunks"] / best[c]["s"] for c in CONFIGS}
    rows = [[c, best[c]["embedder"], best[c]["chunks"], ", ".join(f"{run['s']:.1f}" for run in runs[c]),
             args.docs / best[c]["s"], rate[c], best[c]["chunks"] / best[c]["embed_s"], *scores[c].values()]
            for c in CONFIGS]
    print(f"SciFact subset: {args.docs} abstracts, {len(items)} claims with every judged abstract in it "
          f"({len(sets['zh'][0])} of them also in Chinese)")
    print(table(["settings", "embedder recorded", "chunks", "ingest s per round", "abstracts/s (best)",
                 "ingest chunks/s (best)", "embed-stage chunks/s", *(f"nDCG@10 {k}" for k in scores["auto"])], rows))
    print(f"auto / e5 ingest throughput: {rate['auto'] / rate['e5']:.2f}x in chunks/s, "
          f"{best['e5']['s'] / best['auto']['s']:.2f}x in abstracts/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
