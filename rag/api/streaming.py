"""A streamed chat answer as OpenAI server-sent events: role, evidence, tokens, then references and [DONE]."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator

from rag.api import shapes

logger = logging.getLogger(__name__)


class _Cancelled(Exception):
    """The client went away: stop generating."""


def stream_answer(run, admission, model: str, version: str) -> Iterator[str]:
    """SSE chunks: role, evidence (as soon as it is selected), tokens, then references and [DONE].

    The chain runs in its own thread, started here (so the LLM admission is always released by it, even
    if the response is never sent), and hands events over a queue; when the client disconnects, the next
    token raises in that thread, which closes the LLM stream (llama.cpp stops generating).
    """
    events: queue.Queue = queue.Queue()
    cancelled = threading.Event()

    def on_token(piece: str) -> None:
        if cancelled.is_set():
            raise _Cancelled()
        events.put(("token", piece))

    def work() -> None:
        try:
            if admission is None:
                events.put(("answer", run(on_token, lambda s: events.put(("evidence", s)))))
            else:
                with admission:
                    events.put(("answer", run(on_token, lambda s: events.put(("evidence", s)))))
        except _Cancelled:
            events.put(("cancelled", None))
        except Exception as e:  # noqa: BLE001 - becomes the stream's error event
            logger.exception("streamed chat failed")
            events.put(("error", e))

    threading.Thread(target=work, daemon=True, name="chat-stream").start()
    return _events(events, cancelled, model, version)


def _events(events: queue.Queue, cancelled: threading.Event, model: str, version: str) -> Iterator[str]:
    cid = shapes.completion_id()
    try:
        yield shapes.chunk_event(cid, model, {"role": "assistant", "content": ""})
        streamed = ""
        while True:
            kind, value = events.get()
            if kind == "evidence":
                yield shapes.chunk_event(cid, model, {}, evidence=shapes.evidence(value), kb_version=version)
            elif kind == "token":  # checked text (rag.check.CheckedStream): complete sentences the check kept
                streamed += value
                yield shapes.chunk_event(cid, model, {"content": value})
            elif kind == "answer":
                rest = value.text[len(streamed):] if value.text.startswith(streamed) else ""
                if rest:  # the last sentence; refusals and extractive answers come whole
                    yield shapes.chunk_event(cid, model, {"content": rest})
                yield shapes.chunk_event(cid, model, {"answer": value.text, **shapes.rag_fields(value, version)},
                                         "stop", usage=shapes.usage(value))
                break
            else:
                message = "the client disconnected" if kind == "cancelled" else shapes.scrub_paths(str(value))
                yield f"data: {shapes.json_dumps(shapes.error_body(message, 'server_error'))}\n\n"
                break
        yield shapes.DONE
    finally:
        cancelled.set()
