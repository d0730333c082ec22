"""OpenAI-style errors: `ApiError` for a route's own refusals, and handlers that turn every other exception into
the same body (status, type, code); no server path beyond the knowledge base is echoed."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag import store
from rag.api import shapes
from rag.api.resources import LLMBusy
from rag.llm import LLMError

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answered with an OpenAI-style body."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param


EXCEPTION_STATUS = {  # exception -> (HTTP status, OpenAI error type, code)
    store.KBNotFound: (404, "invalid_request_error", "kb_not_found"),
    store.KBExists: (409, "invalid_request_error", "kb_exists"),
    store.KBLocked: (409, "invalid_request_error", "kb_locked"),
    store.IndexMismatch: (409, "invalid_request_error", "index_mismatch"),
    LLMBusy: (429, "rate_limit_error", "llm_queue_full"),
}


def install_error_handlers(app: FastAPI) -> None:
    """Every error becomes an OpenAI-style body; no server path beyond the knowledge base is echoed."""

    def reply(status: int, message: str, kind: str, code: str | None = None, param: str | None = None):
        return JSONResponse(shapes.error_body(shapes.scrub_paths(message), kind, code, param), status_code=status)

    @app.exception_handler(ApiError)
    async def api_error(_, e: ApiError):
        return reply(e.status, e.message, e.kind, e.code, e.param)

    @app.exception_handler(RequestValidationError)
    async def invalid(_, e: RequestValidationError):
        details = "; ".join(f"{'.'.join(str(p) for p in x['loc'] if p != 'body')}: {x['msg']}" for x in e.errors())
        return reply(400, f"invalid request: {details}", "invalid_request_error")

    @app.exception_handler(StarletteHTTPException)  # 404 routes, 405, 413 body limits
    async def http_error(_, e: StarletteHTTPException):
        code = {413: "request_too_large", 404: "not_found", 405: "method_not_allowed"}.get(e.status_code)
        return reply(e.status_code, str(e.detail), "invalid_request_error", code)

    def mapped(status: int, kind: str, code: str):
        async def handler(_, e: Exception):
            response = reply(status, str(e), kind, code)
            if status == 429:
                response.headers["Retry-After"] = "5"
            return response

        return handler

    for exc, (status, kind, code) in EXCEPTION_STATUS.items():
        app.add_exception_handler(exc, mapped(status, kind, code))

    @app.exception_handler(LLMError)
    async def llm_down(_, e: LLMError):
        return reply(503, f"the LLM failed: {e}", "server_error", "llm_unavailable")

    @app.exception_handler(Exception)
    async def internal(_, e: Exception):
        logger.exception("request failed")
        return reply(500, f"internal error ({type(e).__name__})", "server_error")
