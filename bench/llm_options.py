"""llama.cpp server options for the embedded CPU LLM: prompt tok/s, TTFT and generation tok/s per config.

Each configuration is one server process: `rag.llm_server.main()` exactly as the app starts it
(`python -m rag.llm_server --model GGUF --port P --ctx 4096 --threads N`), with a list of
`xllamacpp.CommonParams` overrides applied on top just before `xllamacpp.Server(params)` starts
(so the "main() now" row is what the app really runs, and every other row says what it changes).

The requests mimic the answer flow of the chain: a fixed system prompt (~150 tokens, identical for
every question, so it stays in llama.cpp's prompt cache after the warm-up request) and a user message
of ~250-400 tokens (numbered evidence sentences from llm-notes-zh + a dev-set question), different
for every question. Per question:

1. the answerability check: the same messages with an instruction appended to the user message,
   max_tokens 1 (streamed; its TTFT is the time to process the user message);
2. the streamed answer: the messages without the instruction; it shares the prefix with the check
   up to the end of the question, so llama.cpp's prompt cache should leave only a handful of tokens
   to process (the "answer prompt_n" column shows it).

Prompt tok/s = new prompt tokens processed / prompt_ms of the check (llama.cpp's `timings`);
TTFT is client-side (request sent -> first streamed content); generation tok/s = predicted_n /
predicted_ms of the answer; total = check wall time + answer wall time. Greedy decoding (temperature
0), so every configuration generates the same answer (speculative decoding is exact under greedy).

The machine is shared: configurations are run in rounds (each round starts every configuration once,
in a shuffled order, with other questions), and the table shows medians over all questions. "other
CPU" is the CPU time other processes (and other VMs: steal) took while a configuration was measured,
in cores: rows with other CPU > ~0.1 were measured on a loaded machine. `--busy N` runs N busy
processes during every measurement (a Python loop, or `--busy-kind torch`: small matmuls on 2
OpenMP threads, like the app's own embedder) to compare configurations under load on purpose.

    .venv/bin/python -m bench.llm_options [--rounds 2] [--questions 3] [--only NAME ...] [--all]
                                          [--busy N [--busy-kind torch]] [--model 1.5b]

Findings (1.5B Q4_K_M, 2 cores; the numbers are in the report that came with this file): on an idle
machine no CommonParams setting beats the defaults (prompt ~90 tok/s, generation ~34 tok/s; smaller
batches equal, flash attention off and a q8_0 KV cache slower, speculative decoding with the 0.5B as
draft halves generation because the draft must also process every prompt, n-gram drafts rarely hit),
and the prompt cache works (the answer after the check evaluates 6 tokens). Under load, libgomp's
default spinning at barriers (GOMP_SPINCOUNT 300,000) sometimes collapses generation to 0.2-3 tok/s;
a spin count of 1,000 costs nothing idle and avoids most of that, so `rag.llm_server.main()` sets it.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import LLM_NOTES, pct, questions, table
from bench.llm_harness import CTX, Server, child
from rag.llm import LLMClient

MAX_TOKENS = 64

SYSTEM_PROMPT = (
    "你是一个严谨的文档问答助手。You answer questions using ONLY the numbered evidence sentences "
    "given in the user message.\n"
    "规则 / Rules:\n"
    "1. 只根据证据回答,不要编造证据里没有的内容;如果证据不足以回答,就直接说明无法根据资料回答。\n"
    "2. Answer in the language of the question: 中文问题用中文回答, English questions in English.\n"
    "3. 回答要简短:一到三句话,先给结论,再补充必要的细节。\n"
    "4. 每个事实后面用方括号标注证据编号,例如 [1] 或 [2][3]。Cite every fact with its evidence number.\n"
    "5. Do not mention these rules, do not repeat the question, and do not add greetings."
)
CHECK_INSTRUCTION = "\n\n请只回答 yes 或 no:上面的证据能回答这个问题吗?Answer yes or no only."


# --- configurations --------------------------------------------------------------------------

# Overrides are (dotted CommonParams attribute, value); a value "enum:NAME.MEMBER" is an xllamacpp
# enum member, "draft:" the draft GGUF path. What main() set before this benchmark, spelled out so
# the row stays reproducible after main() changes:
TODAY = [("n_batch", 2048), ("n_ubatch", 512), ("flash_attn_type", "enum:llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_AUTO"),
         ("cache_type_k", "enum:ggml_type.GGML_TYPE_F16"), ("cache_type_v", "enum:ggml_type.GGML_TYPE_F16"),
         ("cpuparams.poll", 50), ("cpuparams_batch.poll", 50),
         ("env:GOMP_SPINCOUNT", 300000)]  # libgomp's default spin count (OMP_WAIT_POLICY unset, threads <= cores)
FA_ON = ("flash_attn_type", "enum:llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_ENABLED")
FA_OFF = ("flash_attn_type", "enum:llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED")
Q8_KV = [("cache_type_k", "enum:ggml_type.GGML_TYPE_Q8_0"), ("cache_type_v", "enum:ggml_type.GGML_TYPE_Q8_0")]
DRAFT_05B = [("speculative.types", ["enum:common_speculative_type.COMMON_SPECULATIVE_TYPE_DRAFT_SIMPLE"]),
             ("speculative.draft.mparams.path", "draft:"), ("speculative.draft.n_max", 8),
             ("speculative.draft.n_min", 0), ("speculative.draft.p_min", 0.6),
             ("speculative.draft.cpuparams.n_threads", 2), ("speculative.draft.cpuparams_batch.n_threads", 2)]
DRAFT_05B_SHORT = [*DRAFT_05B, ("speculative.draft.n_max", 3), ("speculative.draft.p_min", 0.75)]
NGRAM = [("speculative.types", ["enum:common_speculative_type.COMMON_SPECULATIVE_TYPE_NGRAM_SIMPLE"])]
ONE_THREAD = [("cpuparams.n_threads", 1), ("cpuparams_batch.n_threads", 1)]
# libgomp reads these when xllamacpp (linked against libgomp.so) is imported: "env:" overrides are set first.
OMP_PASSIVE = [("env:OMP_WAIT_POLICY", "passive")]

CONFIGS: dict[str, list[tuple[str, object]]] = {
    "today (main() before)": TODAY,
    "main() now": [],
    "batch 512/512": TODAY + [("n_batch", 512), ("n_ubatch", 512)],
    "batch 256/256": TODAY + [("n_batch", 256), ("n_ubatch", 256)],
    "batch 128/128": TODAY + [("n_batch", 128), ("n_ubatch", 128)],
    "flash attn off": TODAY + [FA_OFF],  # AUTO resolves to enabled on this CPU build (server log)
    "flash attn on + KV q8_0": TODAY + [FA_ON] + Q8_KV,
    "threads_batch 1": TODAY + [("cpuparams_batch.n_threads", 1)],
    "poll 0 (no spin-wait)": TODAY + [("cpuparams.poll", 0), ("cpuparams_batch.poll", 0)],
    "no mmap (load_mode none) + no_perf": TODAY + [("load_mode", "enum:llama_load_mode.LLAMA_LOAD_MODE_NONE"),
                                                    ("no_perf", True)],
    "spec draft 0.5B (n_max 8, p_min 0.6)": TODAY + DRAFT_05B,
    "spec draft 0.5B (n_max 3, p_min 0.75)": TODAY + DRAFT_05B_SHORT,
    "spec ngram-simple": TODAY + NGRAM,
    "threads 1": TODAY + ONE_THREAD,
    "gen threads 1, batch threads 2": TODAY + [("cpuparams.n_threads", 1)],
    "OMP_WAIT_POLICY=passive": TODAY + OMP_PASSIVE,
    "GOMP_SPINCOUNT=100": TODAY + [("env:GOMP_SPINCOUNT", 100)],
    "GOMP_SPINCOUNT=300": TODAY + [("env:GOMP_SPINCOUNT", 300)],
    "GOMP_SPINCOUNT=1000": TODAY + [("env:GOMP_SPINCOUNT", 1000)],
    "GOMP_SPINCOUNT=10000": TODAY + [("env:GOMP_SPINCOUNT", 10000)],
    "GOMP_SPINCOUNT=100000": TODAY + [("env:GOMP_SPINCOUNT", 100000)],
}
# Not in the default run (--all or --only runs them): no-ops for these prompt sizes, pathological, or
# points of the spin-count sweep that the default run does not need (findings in the docstring).
EXTRA = {"batch 512/512", "threads_batch 1", "poll 0 (no spin-wait)", "no mmap (load_mode none) + no_perf",
         "spec draft 0.5B (n_max 8, p_min 0.6)", "gen threads 1, batch threads 2", "OMP_WAIT_POLICY=passive",
         "GOMP_SPINCOUNT=100", "GOMP_SPINCOUNT=1000", "GOMP_SPINCOUNT=10000", "GOMP_SPINCOUNT=100000"}


def stream_chat(client: LLMClient, messages: list[dict], max_tokens: int) -> dict:
    """One streamed chat completion through the app's own client: client TTFT/wall and llama.cpp's timings."""
    t0 = time.perf_counter()
    stream = client.stream(messages, temperature=0.0, max_tokens=max_tokens)
    ttft = None
    for _ in stream:
        if ttft is None:
            ttft = (time.perf_counter() - t0) * 1000
    wall = (time.perf_counter() - t0) * 1000
    return {"ttft_ms": ttft if ttft is not None else wall, "wall_ms": wall, "text": stream.text,
            "timings": stream.timings, "prompt_tokens": stream.prompt_tokens}


# --- prompts -----------------------------------------------------------------------------------


def sentences() -> list[str]:
    """Clean-ish sentences (12-160 characters) from the llm-notes-zh corpus."""
    out = []
    for path in sorted(LLM_NOTES.glob("*.txt")):
        text = path.read_text(encoding="utf-8")
        for s in re.split(r"(?<=[。！？!?;；])|\n+", text):
            s = re.sub(r"\s+", " ", s).strip(" •-*#>")
            if 12 <= len(s) <= 160 and not s.startswith(("[x]", "http")) and "](" not in s:
                out.append(s)
    return out


def user_message(question: str, evidence: list[str]) -> str:
    lines = [f"[{i}] {s}" for i, s in enumerate(evidence, 1)]
    return "证据 / Evidence:\n" + "\n".join(lines) + f"\n\n问题 / Question: {question}"


def make_prompts(n: int, seed: int = 7) -> list[list[dict]]:
    """n different (system, user) message lists; user messages of ~400-550 characters of evidence."""
    rng = random.Random(seed)
    pool = sentences()
    qs = questions(max(n, 40))
    out = []
    for i in range(n):
        start = rng.randrange(len(pool) - 40)
        evidence, chars = [], 0
        for s in pool[start:start + 40]:  # neighbouring sentences: looks like retrieved passages
            if chars + len(s) > 520:
                break
            evidence.append(s)
            chars += len(s)
        out.append([{"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": user_message(qs[(i * 7) % len(qs)], evidence)}])
    return out


def with_check(messages: list[dict]) -> list[dict]:
    return messages[:-1] + [{"role": "user", "content": messages[-1]["content"] + CHECK_INSTRUCTION}]


# --- measuring ------------------------------------------------------------------------------


def _cpu_busy_s() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine so far, from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / hz, steal / hz


def _proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (and its waited-for children) in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def run_config(name: str, model: Path, draft: Path | None, threads: int, prompts: list[list[dict]],
               log: Path) -> dict:
    """Start the config's server, warm it up (caches the system prompt), measure the prompts, stop it."""
    load = os.getloadavg()[0]
    server = Server(model, CONFIGS[name], draft, threads, log)
    try:
        start_ms = server.wait_healthy()
        rows = []
        busy0, steal0, own0, wall0 = *_cpu_busy_s(), sum(os.times()[:2]), time.perf_counter()
        with LLMClient(server.url + "/v1", timeout_s=600.0) as client:
            warm = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "你好, hello."}]
            stream_chat(client, warm, 1)
            for messages in prompts:
                check = stream_chat(client, with_check(messages), 1)
                answer = stream_chat(client, messages, MAX_TOKENS)
                ct, at = check["timings"], answer["timings"]
                rows.append({
                    "prompt_tokens": check["prompt_tokens"], "check_prompt_n": ct.get("prompt_n", 0),
                    "prompt_tps": ct.get("prompt_n", 0) / max(ct.get("prompt_ms", 0), 1e-9) * 1000,
                    "check_ttft": check["ttft_ms"], "answer_prompt_n": at.get("prompt_n", 0),
                    "answer_ttft": answer["ttft_ms"], "gen_n": at.get("predicted_n", 0),
                    "gen_tps": at.get("predicted_n", 0) / max(at.get("predicted_ms", 0), 1e-9) * 1000,
                    "total": check["wall_ms"] + answer["wall_ms"], "text": answer["text"],
                    "draft_n": at.get("draft_n", 0), "draft_accepted": at.get("draft_n_accepted", 0),
                })
        busy1, steal1 = _cpu_busy_s()
        wall = time.perf_counter() - wall0
        mine = _proc_cpu_s(server.proc.pid) + sum(os.times()[:2]) - own0
        # CPU that other processes (or other VMs: steal) took while this config was measured, in cores
        others = max(0.0, (busy1 - busy0) - mine) / wall
        steal = (steal1 - steal0) / wall
    finally:
        server.stop()
    return {"name": name, "start_ms": start_ms, "load": load, "rows": rows, "others": others, "steal": steal}


def summarize(results: list[dict]) -> list[list]:
    by_name: dict[str, list[dict]] = {}
    runs: dict[str, list[dict]] = {}
    for r in results:
        by_name.setdefault(r["name"], []).extend(r["rows"])
        runs.setdefault(r["name"], []).append(r)
    out = []
    for name in CONFIGS:
        rows = by_name.get(name)
        if not rows:
            continue
        def med(key: str, rows=rows) -> float:
            return pct([x[key] for x in rows], 50)

        drafted = sum(x["draft_n"] for x in rows)
        accept = f"{sum(x['draft_accepted'] for x in rows) / drafted:.0%}" if drafted else "-"
        out.append([name, len(rows), med("prompt_tokens"), med("check_prompt_n"), med("prompt_tps"),
                    med("check_ttft"), med("answer_prompt_n"), med("answer_ttft"), med("gen_n"), med("gen_tps"),
                    accept, med("total") / 1000, pct([r["start_ms"] for r in runs[name]], 50),
                    pct([r["others"] for r in runs[name]], 50), pct([r["steal"] for r in runs[name]], 50)])
    return out


BUSY = {
    "loop": "while True: pass",
    "torch": "import torch\ntorch.set_num_threads(2)\na = torch.randn(384, 384)\nwhile True: a @ a",
}


def _raise_exit(*_) -> None:
    raise SystemExit(143)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        rest = argv[1:]
        return child([rest[0]] + rest[2:] if rest[1:2] == ["--"] else rest)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="times each configuration is started")
    parser.add_argument("--questions", type=int, default=3, help="questions per server run")
    parser.add_argument("--only", nargs="+", choices=list(CONFIGS), metavar="NAME", help="configurations to run")
    parser.add_argument("--all", action="store_true", help=f"also the dropped ones: {', '.join(sorted(EXTRA))}")
    parser.add_argument("--model", default="1.5b", choices=("0.5b", "1.5b"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--busy", type=int, default=0,
                        help="busy-loop processes to run during each measurement (simulates a loaded machine)")
    parser.add_argument(
        "--busy-kind", choices=sorted(BUSY), default="loop",
        help="what the busy processes run: a Python busy loop, or small torch matmuls on 2 threads "
             "(OpenMP, like the app's own embedder/reranker)",
    )
    parser.add_argument("--show-answers", action="store_true")
    args = parser.parse_args(argv)

    from rag.models.gguf import GGUFS, assemble_gguf
    from rag.settings import Settings

    cache = Path(Settings().cache_dir)
    model = assemble_gguf(GGUFS[args.model], cache, progress=False)[0]
    draft = assemble_gguf(GGUFS["0.5b"], cache, progress=False)[0] if args.model != "0.5b" else None
    names = args.only or [n for n in CONFIGS if args.all or n not in EXTRA]
    if draft is None:
        names = [n for n in names if "draft" not in n]
    signal.signal(signal.SIGTERM, _raise_exit)  # so `finally` stops the servers and burners
    load0 = os.getloadavg()
    prompts = make_prompts(args.rounds * args.questions)
    rng = random.Random(1)
    results = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rag-bench-llm-options-") as tmp:
        log = Path(tmp) / "server.log"
        for rnd in range(args.rounds):
            order = names[:]
            rng.shuffle(order)
            qs = prompts[rnd * args.questions:(rnd + 1) * args.questions]
            for name in order:
                burners = [subprocess.Popen([sys.executable, "-c", BUSY[args.busy_kind]]) for _ in range(args.busy)]
                try:
                    r = run_config(name, model, draft, args.threads, qs, log)
                finally:
                    for b in burners:
                        b.kill()
                        b.wait()
                results.append(r)
                m = summarize([r])[0]
                print(f"[round {rnd + 1}] {name}: load {r['load']:.2f}, others {r['others']:.2f} cores, "
                      f"steal {r['steal']:.2f}, prompt {m[4]:.0f} tok/s, check TTFT "
                      f"{m[5]:.0f} ms, answer TTFT {m[7]:.0f} ms (prompt_n {m[6]:.0f}), gen {m[9]:.1f} tok/s, "
                      f"total {m[11]:.1f} s", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - t0
    busy = (f", {args.busy} busy process(es) ({args.busy_kind}: `{BUSY[args.busy_kind]!r}`) running during each "
            "measurement" if args.busy else "")
    print(f"## Embedded LLM server options ({args.model}, {args.threads} threads, ctx {CTX}{busy})\n")
    print(f"Load average at start (1/5/15 min): {' / '.join(f'{x:.2f}' for x in load0)}; "
          f"{args.rounds} rounds x {args.questions} questions per configuration (interleaved, shuffled order); "
          f"answers max {MAX_TOKENS} tokens, greedy; benchmark took {elapsed:.0f} s. Medians.\n")
    print(table(["config", "questions", "prompt tokens", "check prompt_n", "prompt tok/s", "check TTFT ms",
                 "answer prompt_n", "answer TTFT ms", "gen tokens", "gen tok/s", "draft accept", "total s",
                 "server start ms", "other CPU (cores)", "steal (cores)"], summarize(results)))
    if args.show_answers:
        for r in results:
            for row in r["rows"]:
                print(f"\n{r['name']}: {row['text']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
