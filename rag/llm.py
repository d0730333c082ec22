"""One OpenAI-compatible chat client for every backend: embedded llama.cpp, vLLM, Ollama.

Backends differ by configuration only (`RAG_LLM_BASE_URL`, `RAG_LLM_MODEL`, `RAG_LLM_API_KEY`):

- embedded (default, `llm_base_url=""`): `rag.llm_server` starts llama.cpp's server with the
  bundled GGUF on 127.0.0.1; the model name is ignored by it.
- vLLM: `vllm serve Qwen/Qwen2.5-7B-Instruct --api-key K` then
  `RAG_LLM_BASE_URL=http://gpu-host:8000/v1 RAG_LLM_MODEL=Qwen/Qwen2.5-7B-Instruct RAG_LLM_API_KEY=K`
  (the model name must match what vLLM serves; see GET /v1/models).
- llama.cpp `llama-server -m model.gguf --port 8080`: `RAG_LLM_BASE_URL=http://host:8080/v1`.
- Ollama: `RAG_LLM_BASE_URL=http://localhost:11434/v1 RAG_LLM_MODEL=qwen2.5:7b-instruct`; Ollama has
  no tokenize endpoint, so token counts fall back to a conservative estimate.

Messages are sent as role/content; the server applies the model's own chat template.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import httpx

logger = logging.getLogger(__name__)

_CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")
_WORD = re.compile(r"[A-Za-z0-9_]+")
_SYMBOL = re.compile(r"[^\sA-Za-z0-9_\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")


class LLMError(RuntimeError):
    """The LLM server answered with an error."""


class LLMUnavailable(LLMError):
    """The LLM server cannot be reached (down, wrong URL, or it timed out)."""


@dataclass(frozen=True)
class Completion:
    """One finished generation with its usage figures."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ms: float = 0.0  # wall time of the request, client side
    finish_reason: str = ""
    timings: dict = field(default_factory=dict, compare=False)  # llama.cpp's server-side timings


def estimate_tokens(text: str) -> int:
    """A conservative token estimate: one per CJK character, 1.3 per word, one per symbol."""
    cjk = len(_CJK.findall(text))
    words = len(_WORD.findall(text))
    symbols = len(_SYMBOL.findall(text))
    return cjk + math.ceil(words * 1.3) + symbols


def _root(base_url: str) -> str:
    """The server root for non-OpenAI endpoints (/health, /tokenize): base URL without /v1."""
    return re.sub(r"/v1/?$", "", base_url.rstrip("/"))


class ChatStream:
    """Iterator over the text pieces of a streamed answer; usage is filled in when it ends."""

    def __init__(self, pieces: Iterator[str]) -> None:
        self._pieces = pieces
        self.text = ""
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.finish_reason = ""
        self.timings: dict = {}
        self.ms = 0.0
        self.done = False

    def __iter__(self) -> ChatStream:
        return self

    def __next__(self) -> str:
        return next(self._pieces)

    def close(self) -> None:
        """Stop early and release the connection."""
        self._pieces.close()

    def completion(self) -> Completion:
        """The finished answer (consumes what is left of the stream)."""
        for _ in self:
            pass
        return Completion(self.text, self.prompt_tokens, self.completion_tokens, self.ms,
                          self.finish_reason, self.timings)


class LLMClient:
    """OpenAI-compatible chat completions over httpx, with retries and clear errors."""

    def __init__(
        self,
        base_url: str,
        model: str = "default",
        api_key: str = "not-needed",
        timeout_s: float = 120.0,
        retries: int = 2,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"LLM base_url must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.root = _root(self.base_url)
        self.model = model
        self.retries = max(0, retries)
        self._tokenize_mode: str | None = None  # "llama.cpp" | "vllm" | "none", found on first use
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)),
            headers={"Authorization": f"Bearer {api_key}"},
        )

    # --- plumbing ---------------------------------------------------------------------------

    def _unavailable(self, cause: BaseException) -> LLMUnavailable:
        return LLMUnavailable(
            f"LLM server at {self.base_url} is not reachable: {type(cause).__name__}: {cause}. "
            "Start it or set RAG_LLM_BASE_URL"
        )

    def _send(self, method: str, url: str, *, stream: bool = False, **kwargs) -> httpx.Response:
        """One request with retries (exponential backoff) on connect errors and 5xx, not on 4xx.

        A read timeout is not retried: the server was up and already spent the time.
        """
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                request = self._http.build_request(method, url, **kwargs)
                response = self._http.send(request, stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as e:
                if last:
                    raise self._unavailable(e) from e
                logger.warning("LLM request to %s failed (%s); retrying", url, e)
            except httpx.TimeoutException as e:
                raise LLMUnavailable(f"LLM server at {self.base_url} timed out: {e!r}") from e
            else:
                if response.status_code < 500 or last:
                    return response
                logger.warning("LLM server returned %s for %s; retrying", response.status_code, url)
                response.close()
            time.sleep(0.25 * 2**attempt)
        raise AssertionError("unreachable")

    def _check(self, response: httpx.Response) -> None:
        if response.status_code >= 400:
            body = response.read().decode("utf-8", "replace")[:500]
            response.close()
            cls = LLMUnavailable if response.status_code >= 500 else LLMError
            raise cls(f"LLM server at {self.base_url} returned HTTP {response.status_code}: {body}")

    def _body(self, messages: Sequence[dict], temperature: float, max_tokens: int,
              stop: Sequence[str] | None, stream: bool) -> dict:
        body = {"model": self.model, "messages": list(messages), "temperature": temperature,
                "max_tokens": max_tokens, "stream": stream}
        if stop:
            body["stop"] = list(stop)
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    # --- API --------------------------------------------------------------------------------

    def chat(self, messages: Sequence[dict], *, temperature: float = 0.1, max_tokens: int = 384,
             stop: Sequence[str] | None = None) -> Completion:
        """One non-streamed chat completion."""
        t0 = time.perf_counter()
        response = self._send("POST", f"{self.base_url}/chat/completions",
                              json=self._body(messages, temperature, max_tokens, stop, False))
        self._check(response)
        data = response.json()
        choice = data["choices"][0]
        usage = data.get("usage") or {}
        return Completion(
            text=choice["message"].get("content") or "",
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
            ms=(time.perf_counter() - t0) * 1000,
            finish_reason=choice.get("finish_reason") or "",
            timings=data.get("timings") or {},
        )

    def option_probabilities(self, messages: Sequence[dict], options: Sequence[str]) -> dict[str, float]:
        """Probability mass the model puts on each option as its first token (OpenAI `top_logprobs`)."""
        body = self._body(messages, 0.0, 1, None, False) | {"logprobs": True, "top_logprobs": 20}
        response = self._send("POST", f"{self.base_url}/chat/completions", json=body)
        self._check(response)
        content = ((response.json()["choices"][0].get("logprobs") or {}).get("content")) or [{}]
        top = content[0].get("top_logprobs") or []
        out = dict.fromkeys(options, 0.0)
        for entry in top:
            token = (entry.get("token") or "").strip().lower()
            for option in options:
                if token and (option.lower().startswith(token) or token.startswith(option.lower())):
                    out[option] += math.exp(entry.get("logprob", -100.0))
        return out

    def stream(self, messages: Sequence[dict], *, temperature: float = 0.1, max_tokens: int = 384,
               stop: Sequence[str] | None = None) -> ChatStream:
        """A streamed chat completion: iterate for text pieces; usage is on the stream at the end.

        The request is sent (and connection errors raised) when this is called, not lazily.
        """
        t0 = time.perf_counter()
        response = self._send("POST", f"{self.base_url}/chat/completions", stream=True,
                              json=self._body(messages, temperature, max_tokens, stop, True))
        self._check(response)
        result = ChatStream(iter(()))
        result._pieces = self._sse_pieces(response, result, t0)
        return result

    def _sse_pieces(self, response: httpx.Response, result: ChatStream, t0: float) -> Iterator[str]:
        """Parse server-sent events (`data: {...}` lines, ended by `data: [DONE]`)."""
        try:
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                event = json.loads(payload)
                if "error" in event:
                    raise LLMError(f"LLM server at {self.base_url} failed mid-stream: {event['error']}")
                if event.get("usage"):
                    result.prompt_tokens = event["usage"].get("prompt_tokens", 0)
                    result.completion_tokens = event["usage"].get("completion_tokens", 0)
                result.timings = event.get("timings") or result.timings
                for choice in event.get("choices") or []:
                    result.finish_reason = choice.get("finish_reason") or result.finish_reason
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        result.text += piece
                        yield piece
        except httpx.TransportError as e:
            raise self._unavailable(e) from e
        finally:
            response.close()
            result.ms = (time.perf_counter() - t0) * 1000
            result.done = True

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` by the server's own tokenizer; a conservative estimate if it has none.

        llama.cpp: POST {root}/tokenize {"content"} -> {"tokens"}; vLLM: POST {root}/tokenize
        {"model", "prompt"} -> {"count", "tokens"}; Ollama and others: `estimate_tokens`.
        """
        if self._tokenize_mode != "none":
            for mode in ([self._tokenize_mode] if self._tokenize_mode else ["llama.cpp", "vllm"]):
                body = {"content": text} if mode == "llama.cpp" else {"model": self.model, "prompt": text}
                response = self._send("POST", f"{self.root}/tokenize", json=body)
                if response.status_code == 200:
                    data = response.json()
                    if "count" in data or "tokens" in data:
                        self._tokenize_mode = mode
                        return int(data.get("count", len(data.get("tokens", []))))
                if response.status_code >= 500:
                    self._check(response)
            if self._tokenize_mode is None:
                logger.info("LLM server at %s has no /tokenize; estimating token counts", self.root)
                self._tokenize_mode = "none"
        return estimate_tokens(text)

    def health(self) -> bool:
        """True when the server answers /health (llama.cpp, vLLM) or /v1/models (Ollama, others)."""
        for url in (f"{self.root}/health", f"{self.base_url}/models"):
            try:
                if self._http.get(url, timeout=5.0).status_code == 200:
                    return True
            except httpx.HTTPError:
                return False
        return False

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def client_from_settings(settings) -> LLMClient:
    """A client for the configured server; starts the embedded one when no base URL is set."""
    from rag.llm_server import ensure_server

    return LLMClient(
        ensure_server(settings),
        model=settings.llm_model,
        api_key=settings.llm_api_key,
        timeout_s=settings.llm_timeout_s,
        retries=settings.llm_retries,
    )
