"""Response bodies: OpenAI chat completions (with references), streamed chunks, retrieval hits.

Nothing here reveals the server's file system: a document is named by its id (its path relative to the
folder it was ingested from) and its file name, never by the absolute path it was read from.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

from rag.records import Answer, Chunk, Citation, Hit

_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])(?:/[^\s/'\"<>:]+)+/([^\s/'\"<>:]*)")


def scrub_paths(text: str) -> str:
    """`text` with every absolute path cut to its last part (error messages name files, never folders)."""
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1) or "…", text)


def json_dumps(body: dict) -> str:
    return json.dumps(body, ensure_ascii=False)


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def _document(chunk: Chunk) -> dict:
    """Where a chunk is: document id, file name, heading, document offsets, page(s) of a paged document."""
    return {"doc_id": chunk.doc_id, "source": Path(chunk.source).name, "heading": chunk.heading,
            "start": chunk.start, "end": chunk.end, "page": chunk.page, "page_end": chunk.page_end}


def reference(citation: Citation) -> dict:
    """One `[n]` of the answer: the cited span (document offsets; touching chunks are merged into one span, whose
    id joins theirs with "+", listed in `chunk_ids`) and the evidence sentences the model read."""
    chunk = citation.chunk
    return {"n": citation.n, "chunk_id": chunk.id, "chunk_ids": chunk.id.split("+"), **_document(chunk),
            "page": citation.page, "page_end": citation.page_end,  # the pages of the sentences the model read
            "text": chunk.text, "supported": citation.supported, "evidence": citation.quotes()}


def evidence(sources) -> list[dict]:
    """The numbered evidence handed to the model (rag.prompt.Source), as soon as it is selected."""
    return [{"n": s.n, "doc_id": s.doc_id, "heading": s.heading, "text": s.text, "pieces": [list(p) for p in s.pieces]}
            for s in sources]


def rag_fields(ans: Answer, version: str) -> dict:
    """What an answer carries beyond the OpenAI message: references, refusal, evidence, timings."""
    return {"references": [reference(c) for c in ans.citations], "refused": ans.refused,
            "refusal_reason": ans.refusal_reason, "answer_mode": ans.answer_mode, "notice": ans.notice,
            "unsupported_sentences": ans.unsupported_sentences, "evidence": evidence(ans.evidence),
            "kb_version": version, "timings_ms": ans.timings_ms}


def usage(ans: Answer) -> dict:
    prompt, completion = ans.usage.get("prompt_tokens", 0), ans.usage.get("completion_tokens", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def chat_completion(ans: Answer, model: str, version: str) -> dict:
    """The OpenAI `chat.completion` object; `choices[0].message` also holds references and `refused`."""
    message = {"role": "assistant", "content": ans.text, **rag_fields(ans, version)}
    return {"id": completion_id(), "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": usage(ans)}


def chunk_event(cid: str, model: str, delta: dict, finish_reason: str | None = None, **extra) -> str:
    """One server-sent event holding a `chat.completion.chunk`."""
    body = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra}
    return f"data: {json_dumps(body)}\n\n"


DONE = "data: [DONE]\n\n"


def hit(rank: int, h: Hit) -> dict:
    """A retrieval hit with every stage's rank and score."""
    return {"rank": rank, "chunk_id": h.chunk.id, **_document(h.chunk), "text": h.chunk.text,
            "dense_rank": h.dense_rank, "dense_score": h.dense_score, "bm25_rank": h.bm25_rank,
            "bm25_score": h.bm25_score, "fused": h.fused, "rerank": h.rerank}


def error_body(message: str, kind: str, code: str | None = None, param: str | None = None) -> dict:
    """The OpenAI error shape."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
