"""Issue 16.5/7: `jumpscope serve` runs uvicorn with limits and timeouts (slow clients are cut off), and trusts
forwarded headers only from configured proxies."""

from __future__ import annotations

import socket
import threading
import time

import pytest


@pytest.fixture
def served(monkeypatch, sae_folder):
    """Run `jumpscope serve` with uvicorn.run captured; returns a function giving its keyword arguments."""
    import uvicorn

    from app.cli import main

    def run(*argv, **env):
        seen = {}
        monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        assert main(["serve", "--sae", str(sae_folder), "--device", "cpu", *argv]) == 0
        return seen

    return run


def test_serve_sets_limits_and_timeouts(served):
    from app.web.server import HeaderTimeoutH11

    kw = served()
    assert kw["timeout_keep_alive"] == 5 and kw["limit_concurrency"] == 100
    assert kw["h11_max_incomplete_event_size"] == 16 * 1024
    assert issubclass(kw["http"], HeaderTimeoutH11) and kw["http"].header_timeout == 10.0
    assert kw["proxy_headers"] is False  # no proxy configured: X-Forwarded-* are ignored
    kw = served(JUMPSCOPE_LIMIT_CONCURRENCY="20", JUMPSCOPE_HEADER_TIMEOUT="3")
    assert kw["limit_concurrency"] == 20 and kw["http"].header_timeout == 3.0


def test_serve_trusts_only_the_configured_proxy(served):
    kw = served(JUMPSCOPE_FORWARDED_ALLOW_IPS='["10.0.0.2"]')
    assert kw["proxy_headers"] is True and kw["forwarded_allow_ips"] == ["10.0.0.2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live_server():
    """A real uvicorn server (our protocol, 0.5 s header deadline) around a tiny ASGI app."""
    import uvicorn

    from app.web.server import protocol_with_timeout

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=protocol_with_timeout(0.5),
                            timeout_keep_alive=5, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield port
    server.should_exit = True
    thread.join(5)


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while sock.recv(1024):
            pass
        return True
    except TimeoutError:
        return False
    except ConnectionError:
        return True


def test_trickled_headers_are_cut_off(live_server):
    with socket.create_connection(("127.0.0.1", live_server)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finishes its headers
        start = time.monotonic()
        for _ in range(3):
            time.sleep(0.2)
            s.sendall(b"X-Slow: 1\r\n")  # a byte now and then does not extend the deadline
        assert _closed_within(s, 3.0) and time.monotonic() - start < 2.5


def test_silent_connection_is_cut_off(live_server):
    with socket.create_connection(("127.0.0.1", live_server)) as s:
        assert _closed_within(s, 3.0)


def test_normal_requests_are_unaffected(live_server):
    with socket.create_connection(("127.0.0.1", live_server)) as s:
        for _ in range(2):  # keep-alive: a second request on the same connection after the deadline
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            s.settimeout(3)
            answer = b""
            while not answer.endswith(b"ok"):
                chunk = s.recv(1024)
                assert chunk, f"connection closed after {answer!r}"
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200")
            time.sleep(0.7)
