"""Performance benchmarks: retrieval latency, BM25 vs rank-bm25, ingest throughput, LLM speed.

Each module has `run(quick: bool) -> str` (a Markdown section) and runs alone with
`python -m bench.<name> [--quick]`; `python -m bench` runs them all and writes bench/RESULTS.md.
These print tables; they are not timed tests and assert nothing about speed.
"""

BENCHMARKS = ("retrieval_latency", "bm25_vs_rank_bm25", "ingest_throughput", "store_backends", "llm", "api_load")
