"""SciFact with stored ColBERT token vectors re-scoring the English default: how small can they be stored?

    OMP_NUM_THREADS=2 nice -n 10 python -m bench.scifact_colbert encode   # every abstract's token states, once
    nice -n 10 python -m bench.scifact_colbert sweep                      # train-chosen weights -> test
    python -m rag.eval retrieval --beir ../shared/datasets/scifact --split test --modes bm25,dense,hybrid --json F
    flock /tmp/rag-bench.lock python -m bench.scifact_colbert app --questions 100   # the app's index: ms, disk
    nice -n 10 python -m bench.scifact_colbert feedback   # Rocchio fed by the re-scored top (not adopted)
    nice -n 10 python -m bench.scifact_colbert idf        # query tokens weighted by IDF in MaxSim (not adopted)

`encode` runs the wheel's answerai-colbert-small-v1 encoder (bench.late_interaction.Colbert: ColBERT's markers,
queries padded with [MASK] to 32, document punctuation left out) over all 5,183 abstracts ("title\\ntext",
at most 512 tokens) and the 1,109 claims, and keeps the raw 384-d states as float16 under eval-out/vectors/.

`sweep` starts from the default for an English knowledge base (BM25 fused with bge-small-en after dense
Rocchio feedback, bench.scifact_prf.app_dense, 50 candidates a channel) and re-orders its top n by
(1 - w) * min-max(fused) + w * min-max(MaxSim), for the token vectors stored in several forms:
- 384-d, L2-normalized (what bench.late_interaction scored on the fly);
- the app's codec (rag.late_interaction.TokenCodec): PCA to d dims fitted on `--sample` token states of the
  corpus (200k by default; an ingest fits it on a new knowledge base's first 100k), L2-normalized after the
  projection, as float32 and as the int8 codes the app stores (one scale per dimension).
w and n are chosen on the 809 train claims; the test figure at that choice is reported with a bootstrap
interval against the default. Storage per 10k chunks is printed from the measured tokens per abstract.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections import Counter

import numpy as np
from tqdm import tqdm

from bench import scifact_prf as prf
from bench.common import SCIFACT, table
from bench.late_interaction import Colbert, model_folder
from bench.scifact_docs import VECTORS, abstracts
from rag.late_interaction import QUERY_TOKENS, TokenCodec, maxsim, query_text, rescored, unit
from rag.text import normalize

TOKENS = VECTORS / "scifact-colbert-tokens.npy"  # (all tokens, 384) float16, abstracts in corpus order
OFFSETS = VECTORS / "scifact-colbert-offsets.npy"  # abstract i's tokens: TOKENS[OFFSETS[i]:OFFSETS[i + 1]]
SCIFACT_DIR = SCIFACT.parent
CANDIDATES = 50
DEPTHS = (10, 20, 30)
WEIGHTS = [w / 10 for w in range(1, 11)]
PCA_DIMS = (32, 64, 96, 128)


def queries_path(split: str):
    return VECTORS / f"scifact-colbert-claims-{split}.npy"


def encode(args) -> None:
    corpus = prf.load_corpus()
    docs = abstracts()
    model = Colbert(model_folder())
    if not args.queries_only:
        parts, offsets = [], [0]
        for start in tqdm(range(0, len(corpus.ids), 64), desc="colbert abstracts"):
            for states in model.documents([docs[d] for d in corpus.ids[start:start + 64]]):
                parts.append(states.astype(np.float16))
                offsets.append(offsets[-1] + len(states))
        np.save(TOKENS, np.concatenate(parts))
        np.save(OFFSETS, np.array(offsets))
    for split in prf.SPLITS:
        claims = prf.load_claims(corpus, split)
        texts = [normalize(query_text(q.query)) for q in claims.questions]  # as the app reads a query, one at a time
        np.save(queries_path(split), model.queries(texts).astype(np.float16))


def split_results(corpus: prf.Corpus, c: prf.Claims, forms: dict, offsets: np.ndarray, queries: np.ndarray,
                  depths: tuple[int, ...] = DEPTHS) -> dict:
    """(form, depth, w) -> per-claim (nDCG@10, recall@100); re-scoring is the app's (rag.late_interaction)."""
    row_of = {d: i for i, d in enumerate(corpus.ids)}
    dense = prf.app_dense(corpus, c)
    ranked = [prf.fused(corpus, dense[i], c.bm25[i], CANDIDATES) for i in range(len(c.questions))]
    out = {("default", 0, 0.0): prf.scored(c, lambda i: ranked[i])}
    deepest = max(depths)
    for name, (docs, project) in forms.items():
        sims: list[dict[str, float]] = []
        for i in tqdm(range(len(c.questions)), desc=f"{name} MaxSim"):
            q = project(queries[i])
            sims.append({d: maxsim(q, docs[offsets[row_of[d]]:offsets[row_of[d] + 1]]) for d, _ in ranked[i][:deepest]})
        for depth, w in itertools.product(depths, WEIGHTS):
            out[(name, depth, w)] = prf.scored(c, lambda i, depth=depth, w=w, sims=sims: rescored(
                ranked[i][:depth], sims[i], w) + ranked[i][depth:])
    return out


def sweep(args) -> None:
    corpus = prf.load_corpus()
    tokens, offsets = np.load(TOKENS), np.load(OFFSETS)
    counts = np.diff(offsets)
    print(f"{len(tokens)} token states for {len(counts)} abstracts: mean {counts.mean():.0f}, p90 "
          f"{np.percentile(counts, 90):.0f} a abstract")
    forms = {"384-d float16": (unit(tokens), unit)}
    for dims in args.dims:
        codec = TokenCodec.fit(tokens, dims, sample=args.sample)
        step = 200_000
        forms[f"PCA {dims}-d float32"] = (np.concatenate([codec.project(tokens[i:i + step])
                                                          for i in range(0, len(tokens), step)]), codec.project)
        forms[f"PCA {dims}-d int8"] = (np.concatenate([codec.decode(codec.encode(tokens[i:i + step]))
                                                       for i in range(0, len(tokens), step)]), codec.project)
    per_split = {}
    for split in prf.SPLITS:
        c = prf.load_claims(corpus, split)
        per_split[split] = split_results(corpus, c, forms, offsets, np.load(queries_path(split)), tuple(args.depths))
    results = {key: {s: per_split[s][key] for s in prf.SPLITS} for key in per_split["test"]}
    base = results[("default", 0, 0.0)]
    rows = [["default: BM25 + bge with Rocchio", "", f"{base['train'][:, 0].mean():.3f}",
             f"{base['test'][:, 0].mean():.3f}", "", "", ""]]
    for name in forms:
        members = {k: v for k, v in results.items() if k[0] == name}
        chosen = max(members, key=lambda k: members[k]["train"][:, 0].mean())
        on_test = max(members, key=lambda k: members[k]["test"][:, 0].mean())
        r = members[chosen]
        delta = r["test"][:, 0] - base["test"][:, 0]
        lo, hi = prf.bootstrap(delta)
        bytes_per = {"384-d float16": 384 * 2}.get(name) or int(name.split()[1].split("-")[0]) * (
            1 if name.endswith("int8") else 4)
        rows.append([name, f"top {chosen[1]}, w {chosen[2]}", f"{r['train'][:, 0].mean():.3f}",
                     f"{r['test'][:, 0].mean():.3f}", f"{delta.mean():+.3f} ({lo:+.3f} … {hi:+.3f}), "
                     f"{int((delta > 1e-9).sum())} / {int((delta < -1e-9).sum())}",
                     f"{members[on_test]['test'][:, 0].mean():.3f} (top {on_test[1]}, w {on_test[2]})",
                     f"{counts.mean() * bytes_per * 10_000 / 2**20:,.0f} MiB"])
    print(table(["token vectors", "train-chosen", "train nDCG@10", "test nDCG@10",
                 "Δ test (95% bootstrap), claims better / worse", "tuned on test", "per 10k abstracts"], rows))


class _Late:
    """The default's late stage over whole abstracts (PCA 128-d int8, top 30, w 0.6), MaxSim cached per pair."""

    def __init__(self, corpus: prf.Corpus, c: prf.Claims, codec: TokenCodec, docs: np.ndarray, offsets: np.ndarray,
                 queries: np.ndarray) -> None:
        self.corpus, self.c, self.docs, self.offsets = corpus, c, docs, offsets
        self.queries = [codec.project(q) for q in queries]
        self.row_of = {d: i for i, d in enumerate(corpus.ids)}
        self.sims: dict[tuple[int, str], float] = {}

    def __call__(self, i: int, dense: np.ndarray) -> list[tuple[str, float]]:
        f = prf.fused(self.corpus, dense[i], self.c.bm25[i], CANDIDATES)
        for d, _ in f[:30]:
            if (i, d) not in self.sims:
                r = self.row_of[d]
                self.sims[(i, d)] = maxsim(self.queries[i], self.docs[self.offsets[r]:self.offsets[r + 1]])
        return rescored(f[:30], {d: self.sims[(i, d)] for d, _ in f[:30]}, 0.6) + f[30:]


def feedback(_args) -> None:
    """Rocchio fed by the re-scored top k (instead of the first dense hits), then fused and re-scored again: the
    default's late stage on both passes; train and test."""
    corpus = prf.load_corpus()
    tokens, offsets = np.load(TOKENS), np.load(OFFSETS)
    codec = TokenCodec.fit(tokens, 128)
    docs = np.concatenate([codec.decode(codec.encode(tokens[i:i + 200_000])) for i in range(0, len(tokens), 200_000)])
    grid = list(itertools.product((1, 2, 3), (0.2, 0.4, 0.6, 0.8)))
    results = {}
    for split in prf.SPLITS:
        c = prf.load_claims(corpus, split)
        late = _Late(corpus, c, codec, docs, offsets, np.load(queries_path(split)))
        first = [late(i, prf.app_dense(corpus, c)) for i in range(len(c.questions))]
        results[(split, "default")] = prf.scored(c, first.__getitem__)
        for k, alpha in tqdm(grid, desc=split):
            rows = np.array([[late.row_of[d] for d, _ in first[i][:k]] for i in range(len(c.questions))])
            moved = prf.rocchio_scores(corpus.vectors, c.vectors, rows, alpha)
            results[(split, (k, alpha))] = prf.scored(c, lambda i, moved=moved, late=late: late(i, moved))
    base = results[("test", "default")][:, 0]
    rows = []
    for key in ["default", *grid]:
        delta = results[("test", key)][:, 0] - base
        lo, hi = prf.bootstrap(delta)
        rows.append([str(key), f"{results[('train', key)][:, 0].mean():.3f}", f"{results[('test', key)][:, 0].mean():.3f}",
                     f"{delta.mean():+.3f} ({lo:+.3f} … {hi:+.3f})"])
    print(table(["feedback from the re-scored top (k, alpha)", "train nDCG@10", "test nDCG@10", "Δ test"], rows))


def idf(_args) -> None:
    """MaxSim with each query token's best cosine weighted by idf(wordpiece) ** a (markers 1, [MASK] padding m),
    over the default's top 30 (PCA 128-d int8, whole abstracts); a, m and w chosen on train, test read there."""
    corpus = prf.load_corpus()
    tokens, offsets = np.load(TOKENS), np.load(OFFSETS)
    codec = TokenCodec.fit(tokens, 128)
    docs = np.concatenate([codec.decode(codec.encode(tokens[i:i + 200_000])) for i in range(0, len(tokens), 200_000)])
    model, texts = Colbert(model_folder()), abstracts()
    df: Counter = Counter()
    for ids in model._ids([texts[d] for d in corpus.ids]):
        df.update(set(ids))
    row_of = {d: i for i, d in enumerate(corpus.ids)}
    grid = list(itertools.product((0.0, 0.5, 1.0), (0.0, 0.5, 1.0), (0.5, 0.6, 0.7)))
    results = {}
    for split in prf.SPLITS:
        c = prf.load_claims(corpus, split)
        queries = np.load(queries_path(split))
        dense = prf.app_dense(corpus, c)
        ranked = [prf.fused(corpus, dense[i], c.bm25[i], CANDIDATES) for i in range(len(c.questions))]
        best, idfs = [], []  # per claim: each candidate's best cosine per query token; the query tokens' idf
        for i, q in enumerate(c.questions):
            ids = model._ids([normalize(query_text(q.query))])[0][: QUERY_TOKENS - 3]
            idfs.append(np.log((len(corpus.ids) + 1) / (np.array([df.get(t, 0) for t in ids]) + 0.5)))
            vecs = codec.project(queries[i].astype(np.float32))
            best.append({d: (vecs @ docs[offsets[row_of[d]]:offsets[row_of[d] + 1]].T).max(axis=1)
                         for d, _ in ranked[i][:30]})
        for a, m, w in grid:
            def listed(i: int, a=a, m=m, w=w, idfs=idfs, best=best, ranked=ranked) -> list[tuple[str, float]]:
                weights = np.full(QUERY_TOKENS, m)
                weights[: len(idfs[i]) + 3] = 1.0  # [CLS] [unused0] ... [SEP]
                weights[2 : 2 + len(idfs[i])] = idfs[i] ** a
                return rescored(ranked[i][:30], {d: float(weights @ v) for d, v in best[i].items()}, w) + ranked[i][30:]
            results[(split, a, m, w)] = prf.scored(c, listed)[:, 0]
    chosen = max(grid, key=lambda k: results[("train", *k)].mean())
    rows = [[str(k), f"{results[('train', *k)].mean():.4f}", f"{results[('test', *k)].mean():.4f}",
             "train-chosen" if k == chosen else ""] for k in grid]
    print(table(["(idf power a, [MASK] weight m, late_weight w)", "train nDCG@10", "test nDCG@10", ""], rows))


def app(args) -> None:
    """The app's own SciFact knowledge base (`rag.eval retrieval --beir`): each stage's ms per claim with the
    late stage on and off (alternating, same process), and the disk it takes per 10k chunks."""
    from rag.eval.datasets import load_beir
    from rag.retrieve import open_retriever
    from rag.settings import load_settings
    from rag.store import kb_path

    settings = load_settings(None, kb=args.kb, index_dir=args.index_dir)
    on = open_retriever(settings)
    off = on.with_settings(on.settings.model_copy(update={"late_interaction": "off"}))
    items, _ = load_beir(SCIFACT_DIR, "test")
    claims = [i.question for i in items][: args.questions]
    on.search(claims[0]), off.search(claims[0])  # warm up
    timings: dict[str, dict[str, list[float]]] = {"on": {}, "off": {}}
    for n, claim in enumerate(claims):
        for name, retriever in ((("on", on), ("off", off)) if n % 2 else (("off", off), ("on", on))):
            t = time.perf_counter()
            stages = retriever.search_timed(claim).timings_ms
            stages["total"] = (time.perf_counter() - t) * 1000
            for stage, ms in stages.items():
                timings[name].setdefault(stage, []).append(ms)
    rows = [[f"late {name}", stage, f"{np.percentile(v, 50):.1f}", f"{np.percentile(v, 95):.1f}"]
            for name in ("off", "on") for stage, v in timings[name].items()]
    print(f"{len(claims)} SciFact test claims, {len(on.state)} chunks, top {settings.late_candidates} re-scored")
    print(table(["retriever", "stage", "ms p50", "ms p95"], rows))
    folder = kb_path(settings.index_dir, settings.kb).resolve()
    late = sum(f.stat().st_size for f in (folder / "late").iterdir())
    dense = sum((folder / f).stat().st_size for f in ("vectors.npy", "dense.faiss"))
    per = 10_000 / len(on.state) / 2**20
    print(f"disk: late/ {late * per:,.1f} MiB per 10k chunks ({(late / len(on.state)) / 1024:.1f} KiB a chunk), "
          f"vectors.npy + dense.faiss {dense * per:,.1f} MiB per 10k chunks; whole version folder "
          f"{sum(f.stat().st_size for f in folder.rglob('*') if f.is_file()) * per:,.1f} MiB per 10k chunks")


def app_grid(args) -> None:
    """The app's own knowledge base: hybrid nDCG@10 of a split for each dense_weight x late_candidates x late_weight, through
    rag.eval's scoring (to choose on train, then read test at the choice)."""
    from rag.eval.datasets import load_beir
    from rag.eval.qa import RelevanceJudge
    from rag.eval.retrieval import evaluate_mode
    from rag.retrieve import open_retriever
    from rag.settings import load_settings

    base = open_retriever(load_settings(None, kb=args.kb, index_dir=args.index_dir))
    items, qrels = load_beir(SCIFACT_DIR, args.split)
    judge = RelevanceJudge({d: r.text for d, r in base.state.documents.items()})
    rows = []
    for dense_weight, depth, weight in itertools.product(args.dense_weights, args.depths, args.weights):
        update = {"dense_weight": dense_weight, "late_candidates": depth, "late_weight": weight}
        summary, _ = evaluate_mode(base.with_settings(base.settings.model_copy(update=update)), items, "hybrid",
                                   judge, qrels, progress=False)
        rows.append([str(dense_weight), str(depth), str(weight), f"{summary['ndcg@10']:.4f}", f"{summary['mrr@10']:.4f}"])
    print(f"SciFact {args.split} ({len(items)} claims), app index {args.kb}")
    print(table(["dense_weight", "late_candidates", "late_weight", "nDCG@10", "MRR@10"], rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("encode")
    e.add_argument("--queries-only", action="store_true", help="keep the abstracts' token states, encode the claims")
    e.set_defaults(run=encode)
    s = sub.add_parser("sweep")
    s.add_argument("--dims", type=int, nargs="*", default=list(PCA_DIMS))
    s.add_argument("--sample", type=int, default=200_000, help="token states the PCA is fitted on")
    s.add_argument("--depths", type=int, nargs="*", default=list(DEPTHS), help="fused top n re-scored")
    s.set_defaults(run=sweep)
    sub.add_parser("feedback").set_defaults(run=feedback)
    sub.add_parser("idf").set_defaults(run=idf)
    a = sub.add_parser("app")
    a.add_argument("--kb", default="beir-scifact")
    a.add_argument("--index-dir", default="index")
    a.add_argument("--questions", type=int, default=100)
    a.set_defaults(run=app)
    g = sub.add_parser("app-grid")
    g.add_argument("--kb", default="beir-scifact")
    g.add_argument("--index-dir", default="index")
    g.add_argument("--split", default="train")
    g.add_argument("--depths", type=int, nargs="*", default=[20, 30, 40])
    g.add_argument("--weights", type=float, nargs="*", default=[0.5, 0.6, 0.7])
    g.add_argument("--dense-weights", type=float, nargs="*", default=[0.5], help="fusion's dense share")
    g.set_defaults(run=app_grid)
    args = parser.parse_args(argv)
    args.run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
