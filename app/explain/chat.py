"""Chat completions from an OpenAI-compatible endpoint (vLLM, llama.cpp server, Ollama, OpenAI).

`OpenAIChat` POSTs `{base}/chat/completions` with the standard library only (no HTTP dependency for the core):
a concurrency limit (a thread pool of `concurrency` workers in `complete_many`), retries with exponential backoff
and jitter on connection errors, timeouts, 429 and 5xx (honouring a short `Retry-After`), and one clear error when
the endpoint stays unreachable (`LLMUnreachable`), refuses the request (`LLMRequestError`, other 4xx) or answers
something that is not a chat completion (`LLMResponseError`). Malformed answers are retried too: a flaky proxy
may recover.

`ChatModel` is what explainers and scorers take; `app.explain.hf_chat.HFChat` is the local-model one.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger(__name__)

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": ...}


class LLMError(RuntimeError):
    """Any failure of an LLM backend (the explain run counts the latent as failed and goes on)."""


class LLMUnreachable(LLMError):
    """The endpoint could not be reached (refused, DNS, timeouts, 5xx/429 after every retry)."""


class LLMRequestError(LLMError):
    """The endpoint refused the request (4xx other than 429: bad model name, bad key, …); never retried."""


class LLMResponseError(LLMError):
    """The endpoint answered something that is not a usable chat completion."""


@runtime_checkable
class ChatModel(Protocol):
    """Answers chat conversations; `name` is stored in the explainer/scorer name ('openai:<model>', 'hf:<model>')."""

    name: str

    def complete(self, messages: Sequence[Message], max_tokens: int = 200) -> str: ...

    def complete_many(self, conversations: Sequence[Sequence[Message]], max_tokens: int = 200
                      ) -> list[str | LLMError]: ...


def chat_url(endpoint: str) -> str:
    """The chat-completions URL of an endpoint given as a base ('http://h:8080', '.../v1') or the full URL."""
    parts = urllib.parse.urlsplit(endpoint.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"endpoint must be an http(s) URL such as http://127.0.0.1:8080/v1, got {endpoint!r}")
    path = parts.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path = (path or "/v1") + "/chat/completions"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def completion_text(body: bytes) -> str:
    """The assistant text of a chat-completion response body (LLMResponseError with an excerpt otherwise)."""
    excerpt = body[:200].decode("utf-8", "replace")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise LLMResponseError(f"the endpoint answered something that is not JSON: {excerpt!r}") from None
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise LLMResponseError(f"the endpoint's JSON is not a chat completion (no choices[0].message.content): "
                               f"{excerpt!r}") from None
    if not isinstance(content, str):
        raise LLMResponseError(f"the chat completion's content is not text: {excerpt!r}")
    return content


@dataclass
class OpenAIChat:
    """An OpenAI-compatible chat endpoint.

    `endpoint` is the base URL ('http://127.0.0.1:8080/v1'); `api_key_env` names the environment variable holding
    the key (sent as a Bearer token when set; local servers need none). Greedy (`temperature` 0) by default.
    """

    endpoint: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 60.0
    retries: int = 4  # tries after the first
    backoff: float = 0.5  # seconds before the first retry; doubles each time (plus up to 25% jitter)
    max_backoff: float = 20.0
    concurrency: int = 4
    temperature: float = 0.0
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = chat_url(self.endpoint)
        if not self.model:
            raise ValueError("an OpenAI-compatible endpoint needs a model name (--explainer-model)")
        if self.concurrency < 1 or self.retries < 0 or self.timeout <= 0:
            raise ValueError("concurrency must be >= 1, retries >= 0 and timeout > 0")

    @property
    def name(self) -> str:
        return f"openai:{self.model}"

    def _request(self, messages: Sequence[Message], max_tokens: int) -> urllib.request.Request:
        body = json.dumps({"model": self.model, "messages": list(messages), "max_tokens": int(max_tokens),
                           "temperature": self.temperature, "stream": False}).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return urllib.request.Request(self.url, data=body, headers=headers, method="POST")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(max(float(retry_after), 0.0), self.max_backoff)
            except ValueError:
                pass  # an HTTP date: fall back to our own backoff
        base = min(self.backoff * 2 ** attempt, self.max_backoff)
        return base * (1 + 0.25 * random.random())

    def complete(self, messages: Sequence[Message], max_tokens: int = 200) -> str:
        """One chat completion, retried on transient failures (see the module docstring)."""
        last, garbage = "", False
        for attempt in range(self.retries + 1):
            retry_after, garbage = None, False
            try:
                with urllib.request.urlopen(self._request(messages, max_tokens), timeout=self.timeout) as resp:
                    return completion_text(resp.read())
            except urllib.error.HTTPError as e:
                detail = e.read()[:200].decode("utf-8", "replace") if e.fp else ""
                if e.code != 429 and e.code < 500:
                    raise LLMRequestError(f"{self.url} refused the request: HTTP {e.code} {detail!r}") from None
                last, retry_after = f"HTTP {e.code} {detail!r}", e.headers.get("Retry-After")
            except LLMResponseError as e:
                last, garbage = str(e), True
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                reason = getattr(e, "reason", e)
                last = f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
            if attempt < self.retries:
                delay = self._delay(attempt, retry_after)
                log.warning("LLM endpoint %s: %s; retry %d/%d in %.1f s", self.url, last, attempt + 1, self.retries,
                            delay)
                time.sleep(delay)
        if garbage:
            raise LLMResponseError(f"{self.url}: {last} (after {self.retries + 1} tries)")
        raise LLMUnreachable(f"cannot get an answer from the LLM endpoint {self.url} after {self.retries + 1} tries "
                             f"({last}); is the server running and the URL right?")

    def complete_many(self, conversations: Sequence[Sequence[Message]], max_tokens: int = 200
                      ) -> list[str | LLMError]:
        """Every conversation's answer (or its LLMError), at most `concurrency` requests in flight."""
        return run_concurrently(lambda m: self.complete(m, max_tokens), conversations, self.concurrency)


def run_concurrently(fn: Any, items: Sequence[Any], concurrency: int) -> list[Any]:
    """fn(item) for each item on up to `concurrency` threads, in order; an LLMError is returned, not raised."""

    def safe(item: Any) -> Any:
        try:
            return fn(item)
        except LLMError as e:
            return e

    if concurrency <= 1 or len(items) <= 1:
        return [safe(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(concurrency, len(items)), thread_name_prefix="llm") as pool:
        return list(pool.map(safe, items))
