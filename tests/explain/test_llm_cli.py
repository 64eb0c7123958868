"""`jumpscope explain --explainer openai` end to end on a real (tiny) index, against a scripted loopback server:
explanations and detection/fuzzing scores land in index.db, a rerun resumes, an unreachable endpoint fails
cleanly."""

from __future__ import annotations

import re
import socket
import sqlite3

from app.cli import main
from app.explain.prompts import DETECTION_SYSTEM, EXPLAIN_SYSTEM, FUZZING_SYSTEM
from tests.explain.fake_llm import FakeLLM, Reply


def script(req):
    system, user = req["messages"][0]["content"], req["messages"][-1]["content"]
    if system == EXPLAIN_SYSTEM:
        n = len(re.findall(r"^Example \d+:", user, flags=re.M))
        return Reply(content=f"Some thinking.\nExplanation: tokens seen in {n} examples")
    assert system in (DETECTION_SYSTEM, FUZZING_SYSTEM)
    n = len(re.findall(r"^Example \d+:", user, flags=re.M))
    return Reply(content=str([1] * n))  # always "yes": balanced accuracy 0.5 wherever it is defined


def test_openai_explainer_cli_stores_explanations_and_scores(sae_dir, capsys):
    with FakeLLM(script) as fake:
        args = ["explain", "--sae", str(sae_dir), "--explainer", "openai", "--endpoint", fake.url,
                "--explainer-model", "fake-1", "--latents", "0-5", "--score", "--concurrency", "2"]
        assert main(args) == 0
        first = len(fake.requests)
        assert main(args) == 0  # rerun: everything done, nothing asked again
        assert len(fake.requests) == first
    assert all(r["model"] == "fake-1" for r in fake.requests)
    with sqlite3.connect(sae_dir / "index.db") as conn:
        texts = dict(conn.execute("SELECT latent, text FROM latent_explanations WHERE explainer = 'openai:fake-1'"))
        scores = conn.execute("SELECT latent, scorer, metric, value, n FROM explanation_scores "
                              "WHERE explainer = 'openai:fake-1'").fetchall()
    assert sorted(texts) == list(range(6)) and all(re.fullmatch(r"tokens seen in \d+ examples", t)
                                                   for t in texts.values())
    by = {(lat, sc, m): (v, n) for lat, sc, m, v, n in scores}
    for lat in range(6):
        for scorer in ("detection", "fuzzing"):
            ba, n = by[(lat, scorer, "balanced_accuracy")]
            assert ba in (None, 0.5) and n > 0
            assert by[(lat, scorer, "answered")][0] == 1.0
        assert (lat, "builtin", "precision") in by
    assert any(by[(lat, "fuzzing", "balanced_accuracy")][0] == 0.5 for lat in range(6))


def test_openai_explainer_cli_unreachable_endpoint_fails_clearly(sae_dir, capsys, monkeypatch):
    monkeypatch.setattr("app.explain.chat.time.sleep", lambda s: None)  # no real backoff waits
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc = main(["explain", "--sae", str(sae_dir), "--explainer", "openai", "--endpoint",
               f"http://127.0.0.1:{port}/v1", "--explainer-model", "m", "--latents", "0-1"])
    assert rc != 0
    err = capsys.readouterr().err
    assert "latents failed" in err and f"127.0.0.1:{port}" in err and "is the server running" in err


def test_openai_explainer_cli_needs_endpoint_and_model(sae_dir, capsys):
    assert main(["explain", "--sae", str(sae_dir), "--explainer", "openai", "--explainer-model", "m"]) != 0
    assert "--endpoint" in capsys.readouterr().err
    assert main(["explain", "--sae", str(sae_dir), "--explainer", "hf"]) != 0
    assert "--explainer-model" in capsys.readouterr().err
