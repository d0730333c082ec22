"""LLM time to first token and tokens/s for the bundled GGUFs, with the prompts the chain sends.

Prompts are built the chain's way: a real hybrid retrieval over llm-notes-zh (top_k hits),
`pack_context` within settings.context_tokens (counted by the server's tokenizer), then
`build_messages`. One `EmbeddedServer` at a time, stopped before the next model starts.
Prompt and generation speeds are llama.cpp's own timings; TTFT is client-side, request to first piece.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from bench.common import LLM_NOTES, module_main, pct, questions, table

N_QUESTIONS = {False: 3, True: 1}
MODELS = {False: ("0.5b", "1.5b"), True: ("0.5b",)}
QUICK_MAX_TOKENS = 64
INDEX_DIR = Path(tempfile.gettempdir()) / "rag-bench-llm-index"  # reused between runs (incremental ingest)
KB = "llm-notes-zh"


def retriever(settings):
    """A retriever over llm-notes-zh, ingesting it into INDEX_DIR when missing or changed."""
    from ingest.pipeline import run_ingest
    from rag.retrieve import open_retriever
    from rag.store import IndexMismatch

    try:
        run_ingest([LLM_NOTES], settings, progress=False)
    except IndexMismatch:  # built by an earlier run with other chunk settings or embedder
        run_ingest([LLM_NOTES], settings, rebuild=True, progress=False)
    return open_retriever(settings)


def gguf_path(size: str, cache_dir: Path) -> tuple[Path | None, str]:
    """(path of the provisioned GGUF, '') or (None, why it is skipped)."""
    from rag.models.gguf import GGUFS, assemble_gguf

    try:
        return assemble_gguf(GGUFS[size], cache_dir, progress=False)[0], ""
    except (RuntimeError, OSError) as e:
        return None, str(e)


def one_answer(llm, messages: list[dict], settings, max_tokens: int) -> dict:
    """Stream one answer; TTFT (client side) and llama.cpp's prompt/generation timings."""
    t = time.perf_counter()
    stream = llm.stream(messages, temperature=settings.temperature, max_tokens=max_tokens)
    ttft = None
    for _ in stream:
        if ttft is None:
            ttft = (time.perf_counter() - t) * 1000
    timings = stream.timings
    return {"ttft_ms": ttft if ttft is not None else float("nan"), "prompt_tokens": stream.prompt_tokens,
            "prompt_evaluated": timings.get("prompt_n", 0), "prompt_tps": timings.get("prompt_per_second", float("nan")),
            "completion_tokens": stream.completion_tokens, "gen_tps": timings.get("predicted_per_second", float("nan")),
            "total_ms": (time.perf_counter() - t) * 1000}


def bench_model(path: Path, prompts: list[tuple[str, list[dict]]], settings, max_tokens: int) -> tuple[float, list[dict]]:
    """(server start ms, one result per prompt) for one GGUF."""
    from rag.llm import LLMClient
    from rag.llm_server import EmbeddedServer

    threads = settings.llm_threads or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="rag-bench-llm-logs-") as logs, \
            EmbeddedServer(path, ctx=settings.llm_ctx, threads=threads, log_dir=logs) as server, \
            LLMClient(server.base_url, model=settings.llm_model, api_key=settings.llm_api_key,
                      timeout_s=max(settings.llm_timeout_s, 600.0), retries=settings.llm_retries) as llm:
        llm.chat([{"role": "user", "content": "hi"}], max_tokens=1)  # warm-up: page the weights in
        return server.start_ms, [one_answer(llm, messages, settings, max_tokens) for _, messages in prompts]


def build_prompts(settings, qs: list[str], count_tokens) -> list[tuple[str, list[dict]]]:
    """(question, messages) as the chain builds them, without history."""
    from rag.prompt import build_messages, pack_context
    from rag.text import language

    r = retriever(settings)
    out = []
    for q in qs:
        lang = language(q)
        hits = r.search(q, k=settings.top_k)
        sources = pack_context(hits, budget_tokens=settings.context_tokens, count_tokens=count_tokens, lang=lang)
        out.append((q, build_messages(q, sources, lang=lang, history_turns=settings.history_turns)))
    return out


def run(quick: bool) -> str:
    """Benchmark each bundled model; return the Markdown section."""
    from rag.llm import estimate_tokens
    from rag.settings import Settings

    settings = Settings(index_dir=INDEX_DIR, kb=KB)
    max_tokens = QUICK_MAX_TOKENS if quick else settings.max_tokens
    qs = questions(40)[:: max(1, 40 // N_QUESTIONS[quick])][: N_QUESTIONS[quick]]
    # The chain counts context tokens with the server's tokenizer; both models share Qwen2.5's, and
    # the budget check only needs counts, so pack once with the 0.5B server's /tokenize below.
    rows, notes, prompts = [], [], None
    for size in ("0.5b", "1.5b"):
        if size not in MODELS[quick]:
            notes.append(f"{size}: skipped in --quick.")
            continue
        path, why = gguf_path(size, Path(settings.cache_dir))
        if path is None:
            notes.append(f"{size}: skipped, GGUF not available ({why}).")
            continue
        if prompts is None:
            prompts = _prompts_with_server_tokenizer(path, settings, qs) or build_prompts(settings, qs, estimate_tokens)
        start_ms, results = bench_model(path, prompts, settings, max_tokens)
        rows.append([size, len(results), start_ms, pct([r["ttft_ms"] for r in results], 50),
                     pct([r["prompt_tokens"] for r in results], 50), pct([r["prompt_evaluated"] for r in results], 50),
                     pct([r["prompt_tps"] for r in results], 50), pct([r["completion_tokens"] for r in results], 50),
                     pct([r["gen_tps"] for r in results], 50), pct([r["total_ms"] / 1000 for r in results], 50)])
    return "\n\n".join([
        "## LLM: time to first token and tokens/s",
        f"Bundled Qwen2.5-Coder-Instruct Q4_K_M GGUFs via `rag.llm_server.EmbeddedServer` (llama.cpp, "
        f"ctx {settings.llm_ctx}, {settings.llm_threads or os.cpu_count()} threads), one server at a time. "
        f"{len(qs)} real dev questions; prompts built like the chain: hybrid retrieval top-{settings.top_k} over "
        f"llm-notes-zh, `pack_context` within {settings.context_tokens} tokens, `build_messages`; temperature "
        f"{settings.temperature}, max_tokens {max_tokens}" + (" (shrunk for --quick; settings say "
        f"{settings.max_tokens})" if quick else " (settings)") + ". A 1-token warm-up request runs first. "
        "llama.cpp reuses a cached prompt prefix between requests (the system prompt), so 'evaluated' can be "
        "below the prompt size; prompt tok/s is llama.cpp's prompt_per_second over what it evaluated. Medians.",
        table(["model", "questions", "server start ms", "TTFT p50 ms", "prompt tokens", "evaluated", "prompt tok/s",
               "generated tokens", "generation tok/s", "answer wall s"], rows),
        *notes,
    ])


def _prompts_with_server_tokenizer(path: Path, settings, qs: list[str]):
    """Pack the prompts counting tokens with a llama.cpp server's /tokenize (then stop it)."""
    from rag.llm import LLMClient
    from rag.llm_server import EmbeddedServer

    with tempfile.TemporaryDirectory(prefix="rag-bench-llm-logs-") as logs, \
            EmbeddedServer(path, ctx=settings.llm_ctx, threads=1, log_dir=logs) as server, \
            LLMClient(server.base_url) as llm:
        return build_prompts(settings, qs, llm.count_tokens)


def main(argv: list[str] | None = None) -> int:
    """Run alone: `python -m bench.llm [--quick]`."""
    return module_main(run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
