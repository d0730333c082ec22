"""The FastAPI application: routes, API-key check and body limits (errors: errors.py; bodies: schemas.py,
shapes.py; streaming: streaming.py).

Every `/v1` route needs `Authorization: Bearer <RAG_API_KEY>` when a key is set. Retrieval runs in
FastAPI's thread pool (requests in parallel); chat requests go through the LLM gate (bounded queue, 429
when full). Knowledge-base writes run as jobs; a second writer to a knowledge base gets 409.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from rag import store
from rag.api import shapes
from rag.api.errors import ApiError, install_error_handlers
from rag.api.jobs import FileOutcome, Jobs
from rag.api.resources import Resources
from rag.api.schemas import ChatMessage, ChatRequest, CreateKB, RetrieveRequest
from rag.api.streaming import stream_answer
from rag.settings import Settings
from rag.ui import check_upload, is_uploaded_copy

logger = logging.getLogger(__name__)

MB = 1024 * 1024


# --- the application ------------------------------------------------------------------------


def create_app(settings: Settings, resources: Resources | None = None) -> FastAPI:
    """The API over `settings.index_dir`; `resources` may be shared (tests build their own)."""
    res = resources or Resources(settings)
    jobs = Jobs(res.index_dir)
    app = FastAPI(title="rag-local API", version="1", docs_url="/docs", redoc_url=None,
                  max_body_size=int(settings.api_max_body_mb * MB))
    app.state.resources, app.state.jobs = res, jobs
    install_error_handlers(app)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(_auth(settings.api_key.get_secret_value()))])

    @v1.get("/models")
    def models() -> dict:
        data = [{"id": kb, "object": "model", "created": _created(res.index_dir, kb), "owned_by": "rag-local"}
                for kb in store.kb_names(settings)]
        return {"object": "list", "data": data}

    @v1.post("/chat/completions")
    def chat(body: ChatRequest):
        question, history = _conversation(body.messages)
        overrides = {k: v for k, v in {
            "top_k": body.top_k, "retrieval_mode": body.retrieval_mode, "answer_mode": body.answer_mode,
            "temperature": body.temperature, "max_tokens": body.max_completion_tokens or body.max_tokens,
        }.items() if v is not None}
        kb_settings = _kb_settings(res, body.model, overrides)
        opened = _open_model(res, kb_settings)
        needs_llm = kb_settings.answer_mode == "generative"
        llm = _llm(res) if needs_llm else None
        admission = res.gate.admit() if needs_llm else None
        run = _chain_runner(res, kb_settings, opened, llm, question, history)
        if body.stream:
            return StreamingResponse(stream_answer(run, admission, body.model, opened.version),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        if admission is None:
            ans = run()
        else:
            with admission:
                ans = run()
        if ans.notice.startswith("llm_unavailable"):
            res.forget_llm()
            raise ApiError(503, f"the LLM is not reachable ({ans.notice.split(': ', 1)[-1]}); "
                           "ask with answer_mode=extractive for the evidence sentences", "server_error",
                           "llm_unavailable")
        return shapes.chat_completion(ans, body.model, opened.version)

    @v1.post("/retrieve")
    def retrieve(body: RetrieveRequest) -> dict:
        kb_settings = _kb_settings(res, body.kb, {})
        opened = res.open(kb_settings)
        found = opened.retriever.search_timed(body.query, mode=body.mode, k=body.k)
        hits, timings = found.hits, dict(found.timings_ms)
        if body.rerank:
            reranker = res.reranker(kb_settings)
            if reranker is None:
                raise ApiError(400, "no reranker is configured (RAG_RERANKER)", code="no_reranker")
            from rag.rerank import rerank

            t = time.perf_counter()
            hits = rerank(reranker, body.query, hits)
            timings["rerank"] = round((time.perf_counter() - t) * 1000, 1)
        return {"kb": body.kb, "kb_version": opened.version, "query": body.query, "timings_ms": timings,
                "hits": [shapes.hit(i, h) for i, h in enumerate(hits, start=1)]}

    @v1.get("/kbs")
    def list_kbs() -> dict:
        return {"data": [_kb_summary(res.kb_settings(kb)) for kb in store.kb_names(settings)]}

    @v1.post("/kbs", status_code=201)
    def create_kb(body: CreateKB) -> dict:
        from ingest.pipeline import create_kb

        kb_settings = _kb_settings(res, body.name, {})
        job = jobs.claim(body.name)  # nothing else may write it while it is created
        try:
            create_kb(kb_settings)
        finally:
            jobs.finish(job)
        return _kb_summary(kb_settings)

    @v1.delete("/kbs/{kb}")
    def delete_kb(kb: str) -> dict:
        kb_settings = _kb_settings(res, kb, {})
        job = jobs.claim(kb)
        try:
            store.delete_kb(kb_settings)
        finally:
            jobs.finish(job)
        return {"deleted": kb}

    @v1.get("/kbs/{kb}/documents")
    def documents(kb: str) -> dict:
        return {"kb": kb, "data": [_file_json(source, entry) for source, entry in _files(_kb_settings(res, kb, {})).items()]}

    @v1.post("/kbs/{kb}/documents", status_code=202,
             max_body_size=int(settings.api_max_files * settings.max_file_mb * MB + MB))
    async def upload(kb: str, request: Request) -> dict:
        kb_settings = _kb_settings(res, kb, {})
        form = await request.form(max_files=settings.api_max_files, max_fields=10)
        files = [f for f in form.getlist("files") if hasattr(f, "filename")]
        if not files:
            raise ApiError(400, "no files: send them as multipart form field 'files' (repeatable)", code="no_files")
        too_big = [f.filename for f in files if (f.size or 0) > settings.max_file_mb * MB]
        if too_big:
            raise ApiError(413, f"over the {settings.max_file_mb:g} MB per-file limit (RAG_MAX_FILE_MB): "
                           f"{', '.join(map(str, too_big))}", code="file_too_large")
        job = jobs.claim(kb)
        folder = store.uploads_dir(res.index_dir, kb)
        saved = []
        for upload_file in files:
            data = await upload_file.read()
            try:
                name = check_upload(upload_file.filename or "", len(data), settings.max_file_mb)
            except ValueError as e:
                job.files.append(FileOutcome(shapes.scrub_paths(str(upload_file.filename)), "rejected", str(e)))
                continue
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
            saved.append(folder / name)
            job.files.append(FileOutcome(name, "pending"))
        if saved:
            jobs.start(job, saved, kb_settings)
        else:
            jobs.finish(job, "no acceptable files")
        return {"job": job.id, "kb": kb, "status": job.status, "files": [f.__dict__ for f in job.files]}

    @v1.get("/jobs/{job_id}")
    def job_status(job_id: str) -> dict:
        job = jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"no job {job_id!r}", code="job_not_found")
        out = job.to_json()
        out["error"] = shapes.scrub_paths(out["error"])
        return out

    @v1.delete("/kbs/{kb}/documents/{doc_id:path}")
    def delete_document(kb: str, doc_id: str) -> dict:
        from ingest.pipeline import run_ingest

        kb_settings = _kb_settings(res, kb, {})
        owners = {src: e for src, e in _files(kb_settings).items() if doc_id in e.get("doc_ids", [])}
        if not owners:
            raise ApiError(404, f"no document {doc_id!r} in knowledge base {kb!r}", code="document_not_found")
        job = jobs.claim(kb)
        try:
            run_ingest([], kb_settings, deletes=[Path(s) for s in owners], progress=False)
        finally:
            jobs.finish(job)
        for source in owners:  # uploaded copies go with their documents
            if is_uploaded_copy(source, store.uploads_dir(res.index_dir, kb)):
                Path(source).unlink(missing_ok=True)
        deleted = sorted(d for e in owners.values() for d in e.get("doc_ids", []))
        return {"kb": kb, "deleted": deleted, "kb_version": store.kb_version(kb_settings)}

    app.include_router(v1)
    return app


# --- chat -----------------------------------------------------------------------------------


def _conversation(messages: list[ChatMessage]) -> tuple[str, list[dict]]:
    """The last user message is the question; earlier user/assistant turns are the history."""
    turns = [m for m in messages if m.role in ("user", "assistant")]
    if not turns or turns[-1].role != "user" or not turns[-1].text().strip():
        raise ApiError(400, "the last message must be a non-empty user message", param="messages")
    history = [{"role": m.role, "content": m.text()} for m in turns[:-1] if m.text().strip()]
    return turns[-1].text(), history


def _chain_runner(res: Resources, settings: Settings, opened, llm, question: str, history: list[dict]):
    """answer(...) bound to this request; callbacks are passed when it runs."""
    from rag.chain import answer

    def run(on_token: Callable[[str], None] | None = None, on_evidence=None):
        return answer(question, history, settings=settings, retriever=opened.retriever, llm=llm,
                      reranker=res.reranker(settings), on_token=on_token, on_evidence=on_evidence)

    return run


# --- helpers --------------------------------------------------------------------------------


def _kb_settings(res: Resources, kb: str, overrides: dict) -> Settings:
    try:
        return res.kb_settings(kb, **overrides)
    except ValidationError as e:
        raise ApiError(400, "invalid settings: " + "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}"
                                                             for x in e.errors())) from e
    except ValueError as e:  # a knowledge-base name that cannot be a folder name
        raise ApiError(400, str(e), param="kb") from e


def _open_model(res: Resources, settings: Settings):
    try:
        return res.open(settings)
    except store.KBNotFound as e:
        raise ApiError(404, f"the model {settings.kb!r} does not exist (models are knowledge bases: "
                       "GET /v1/models)", code="model_not_found", param="model") from e


def _llm(res: Resources):
    """The LLM client, or 503 when the server cannot be started or reached."""
    try:
        llm = res.llm
    except Exception as e:  # noqa: BLE001 - an embedded server that fails to start
        res.forget_llm()
        raise ApiError(503, f"the LLM could not be started: {shapes.scrub_paths(str(e))[:300]}", "server_error",
                       "llm_unavailable") from e
    if not llm.health():
        res.forget_llm()
        raise ApiError(503, "the LLM server does not answer its health check; ask with answer_mode=extractive "
                       "for the evidence sentences", "server_error", "llm_unavailable")
    return llm


def _manifest(settings: Settings) -> store.Manifest:
    manifest = store.peek_manifest(settings)
    if manifest is None:
        raise store.KBNotFound(f"no knowledge base {settings.kb!r}")
    return manifest


def _files(settings: Settings) -> dict:
    return _manifest(settings).files


def _file_json(source: str, entry: dict) -> dict:
    return {"name": Path(source).name, "doc_ids": entry.get("doc_ids", []), "chunks": entry.get("chunks", 0),
            "sha256": entry.get("sha256", "")}


def _kb_summary(settings: Settings) -> dict:
    manifest = _manifest(settings)
    return {"name": settings.kb, "version": store.kb_version(settings), "updated": manifest.updated,
            "documents": len(manifest.files), "chunks": manifest.counts.get("chunks", 0),
            "embedder": manifest.embedder.id, "language": manifest.language, "store": settings.store}


def _created(index_dir: Path, kb: str) -> int:
    try:
        return int(store.kb_path(index_dir, kb).stat().st_mtime)
    except OSError:
        return 0


def _auth(key: str) -> Callable:
    """A dependency that checks the bearer token in constant time (no key configured: no check)."""

    def check(request: Request) -> None:
        if not key:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            raise ApiError(401, "missing or wrong API key (Authorization: Bearer <RAG_API_KEY>)",
                           "authentication_error", "invalid_api_key")

    return check


