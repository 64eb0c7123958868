"""A small fake OpenAI-compatible server on a loopback port, for the failure modes only (429, 5xx, timeouts,
malformed answers) and for scripted answers; the real endpoint tests use llama-cpp-python's server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """What the fake server answers to one request."""

    status: int = 200
    body: bytes | None = None  # None: a chat completion holding `content`
    content: str = "ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds slept before answering (timeouts, concurrency)


def completion(content: str) -> bytes:
    return json.dumps({"id": "x", "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}).encode()


class FakeLLM:
    """Serves `script(request_json) -> Reply` (or a list of Replies, one per request, the last repeated).

    Records every request (its JSON and headers) and the most requests that were in flight at once.
    """

    def __init__(self, script: Callable[[dict[str, Any]], Reply] | list[Reply]) -> None:
        self.script = script
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                data = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with fake._lock:
                    n = len(fake.requests)
                    fake.requests.append(data)
                    fake.headers.append(dict(self.headers))
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                answering = False
                try:
                    s = fake.script
                    reply = s(data) if callable(s) else s[min(n, len(s) - 1)]
                    if reply.delay:
                        time.sleep(reply.delay)
                    body = reply.body if reply.body is not None else completion(reply.content)
                    # no longer in flight once the answer starts: the client may send its next request as soon
                    # as it has read this one, before this thread would reach `finally` on a loaded machine
                    with fake._lock:
                        fake.in_flight -= 1
                    answering = True
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout)
                finally:
                    if not answering:
                        with fake._lock:
                            fake.in_flight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeLLM:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
