"""The OpenAI-compatible client against a fake loopback server: retries, backoff, 429/5xx, timeouts, garbage,
refusals, an unreachable endpoint, the concurrency limit and the API key header."""

from __future__ import annotations

import socket
import time

import pytest

from app.explain.chat import LLMRequestError, LLMResponseError, LLMUnreachable, OpenAIChat, chat_url, completion_text
from tests.explain.fake_llm import FakeLLM, Reply

MSG = [{"role": "user", "content": "hi"}]


def client(url: str, **kw) -> OpenAIChat:
    kw = {"retries": 3, "backoff": 0.01, "timeout": 2.0, **kw}
    return OpenAIChat(url, "m", **kw)


def test_chat_url_forms():
    assert chat_url("http://h:8080") == "http://h:8080/v1/chat/completions"
    assert chat_url("http://h:8080/v1/") == "http://h:8080/v1/chat/completions"
    assert chat_url("https://api.x/v1/chat/completions") == "https://api.x/v1/chat/completions"
    assert chat_url("http://h:11434/api/openai") == "http://h:11434/api/openai/chat/completions"
    with pytest.raises(ValueError, match="http"):
        chat_url("localhost:8080")


def test_answer_and_request_shape(monkeypatch):
    monkeypatch.setenv("MY_KEY", "sekret")
    with FakeLLM([Reply(content="hello")]) as fake:
        assert client(fake.url, api_key_env="MY_KEY").complete(MSG, max_tokens=7) == "hello"
    req = fake.requests[0]
    assert req["model"] == "m" and req["messages"] == MSG and req["max_tokens"] == 7 and req["temperature"] == 0
    assert fake.headers[0]["Authorization"] == "Bearer sekret"


def test_no_key_no_header(monkeypatch):
    monkeypatch.delenv("NOPE_KEY", raising=False)
    with FakeLLM([Reply()]) as fake:
        client(fake.url, api_key_env="NOPE_KEY").complete(MSG)
    assert "Authorization" not in fake.headers[0]


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_transient_status_is_retried(status):
    with FakeLLM([Reply(status=status, body=b"busy"), Reply(status=status, body=b"busy"), Reply(content="done")]) as f:
        assert client(f.url).complete(MSG) == "done"
    assert len(f.requests) == 3


def test_retry_after_is_honoured():
    with FakeLLM([Reply(status=429, body=b"slow down", headers={"Retry-After": "0.3"}), Reply(content="ok")]) as f:
        t0 = time.perf_counter()
        assert client(f.url, backoff=0.0).complete(MSG) == "ok"
        assert time.perf_counter() - t0 >= 0.3


def test_backoff_grows_exponentially():
    c = client("http://127.0.0.1:9/v1", backoff=0.1, max_backoff=1.0)
    delays = [c._delay(i, None) for i in range(6)]
    for i, d in enumerate(delays):
        base = min(0.1 * 2 ** i, 1.0)
        assert base <= d <= base * 1.25


def test_server_error_exhausts_retries_with_clear_error():
    with FakeLLM([Reply(status=503, body=b"overloaded")]) as f:
        with pytest.raises(LLMUnreachable, match=r"after 3 tries.*HTTP 503"):
            client(f.url, retries=2).complete(MSG)
    assert len(f.requests) == 3


def test_client_error_is_not_retried():
    with FakeLLM([Reply(status=404, body=b'{"error": "model m not found"}')]) as f:
        with pytest.raises(LLMRequestError, match="HTTP 404.*model m not found"):
            client(f.url).complete(MSG)
    assert len(f.requests) == 1


def test_timeout_then_success():
    with FakeLLM([Reply(delay=1.0, content="late"), Reply(content="fast")]) as f:
        assert client(f.url, timeout=0.3).complete(MSG) == "fast"
    assert len(f.requests) == 2


def test_timeout_every_time_is_unreachable():
    with FakeLLM([Reply(delay=1.0)]) as f:
        with pytest.raises(LLMUnreachable, match="timed out|Timeout"):
            client(f.url, timeout=0.2, retries=1).complete(MSG)


@pytest.mark.parametrize("body, match", [(b"<html>oops</html>", "not JSON"), (b'{"choices": []}', "not a chat"),
                                         (b'{"choices": [{"message": {"content": null}}]}', "not text")])
def test_garbage_answer_is_a_clear_error(body, match):
    with FakeLLM([Reply(body=body)]) as f:
        with pytest.raises(LLMResponseError, match=match):
            client(f.url, retries=1).complete(MSG)
    assert len(f.requests) == 2  # retried once, then the error


def test_garbage_then_good_answer_recovers():
    with FakeLLM([Reply(body=b"garbage"), Reply(content="fine")]) as f:
        assert client(f.url).complete(MSG) == "fine"


def test_unreachable_endpoint():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LLMUnreachable, match=rf"127.0.0.1:{port}.*is the server running"):
        client(f"http://127.0.0.1:{port}/v1", retries=1).complete(MSG)


def test_concurrency_limit_and_order():
    with FakeLLM(lambda req: Reply(content=req["messages"][0]["content"], delay=0.15)) as f:
        convs = [[{"role": "user", "content": f"q{i}"}] for i in range(9)]
        out = client(f.url, concurrency=3).complete_many(convs)
    assert out == [f"q{i}" for i in range(9)]
    assert f.max_in_flight == 3


def test_complete_many_returns_errors_in_place():
    def script(req):
        return Reply(status=400, body=b"bad") if req["messages"][0]["content"] == "bad" else Reply(content="good")

    with FakeLLM(script) as f:
        out = client(f.url, concurrency=2).complete_many([[{"role": "user", "content": c}] for c in
                                                          ("a", "bad", "b")])
    assert out[0] == "good" and out[2] == "good" and isinstance(out[1], LLMRequestError)


def test_completion_text_reads_openai_shape():
    assert completion_text(b'{"choices": [{"message": {"role": "assistant", "content": "x"}}]}') == "x"


def test_bad_settings():
    with pytest.raises(ValueError, match="model name"):
        OpenAIChat("http://h/v1", "")
    with pytest.raises(ValueError, match="concurrency"):
        OpenAIChat("http://h/v1", "m", concurrency=0)
