"""Sweeps: N SAEs from one LM pass equal N separate runs; harvest progress is logged; the run summary."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import load_file

from app.cli import main
from app.training import harvest
from app.training.quickeval import HELD_OUT_TOKENS
from app.training.summary import SUMMARY_FILE
from app.training.sweep import SWEEP_FILE, expand, run_name
from tests.conftest import TINY_TEXTS

COMMON = ["--hook", "resid_post", "--context-size", "16", "--tokens", "768", "--batch-size", "64",
          "--buffer-tokens", "200", "--lm-batch-size", "3", "--checkpoint-every", "5", "--log-every", "4",
          "--device", "cpu", "--no-progress"]


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(f"{t} ({i})" for i, t in enumerate(TINY_TEXTS * 2)))
    return path


def _weights(folder):
    return load_file(str(folder / "sae_weights.safetensors"))


@pytest.mark.parametrize("axes,names", [
    (["--layer", "0,1", "--d-sae", "16"], ["L0-resid_post", "L1-resid_post"]),
    pytest.param(["--layer", "0,1", "--d-sae", "16,24"],
                 ["L0-resid_post-d16", "L0-resid_post-d24", "L1-resid_post-d16", "L1-resid_post-d24"],
                 marks=pytest.mark.slow),
])
def test_sweep_equals_separate_runs(tiny_model_dir, corpus, tmp_path, capsys, monkeypatch, axes, names) -> None:
    model = str(tiny_model_dir("gpt2"))
    forwards = []
    orig = harvest.Harvester._harvest
    monkeypatch.setattr(harvest.Harvester, "_harvest", lambda self, j: forwards.append(j) or orig(self, j))
    base = ["train", "--model", model, "--corpus", str(corpus), *COMMON]
    rc = main([*base, *axes, "--target-l0", "4", "--out", str(tmp_path / "sweep")])
    assert rc == 0, capsys.readouterr().err
    sweep_forwards = len(forwards)
    runs = json.loads((tmp_path / "sweep" / SWEEP_FILE).read_text())["runs"]
    assert [r["name"] for r in runs] == names
    forwards.clear()
    for r in runs:  # the independent reference: each SAE trained alone with the same flags
        one = tmp_path / "alone" / r["name"]
        rc = main([*base, "--layer", str(r["layer"]), "--d-sae", str(r["d_sae"]), "--target-l0", "4",
                   "--out", str(one)])
        assert rc == 0, capsys.readouterr().err
        swept = tmp_path / "sweep" / r["name"]
        cfg = json.loads((swept / "train_config.json").read_text())
        assert (cfg["layer"], cfg["d_sae"], cfg["out"]) == (r["layer"], r["d_sae"], str(swept))
        a, b = _weights(swept), _weights(one)
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
        assert (swept / "checkpoints").is_dir()
    # The sweep folder's metrics.jsonl follows every run (what a sweep job's per-SAE progress reads).
    rows = [json.loads(line) for line in (tmp_path / "sweep" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == rows[-1]["total_steps"] == 12 and set(rows[-1]["runs"]) == set(names)
    for name, run in rows[-1]["runs"].items():
        last = json.loads((tmp_path / "sweep" / name / "metrics.jsonl").read_text().splitlines()[-1])
        assert (run["step"], run["l0"], run["fvu"]) == (last["step"], last["l0"], last["fvu"])
    assert [r["step"] for r in rows] == sorted(r["step"] for r in rows) and rows[0]["step"] < 12
    # One LM pass serves every SAE of the sweep: as many block harvests as ONE separate run needs.
    assert sweep_forwards * len(runs) == len(forwards)


def test_sweep_resumes_every_run(tiny_model_dir, corpus, tmp_path, capsys) -> None:
    model = str(tiny_model_dir("gpt2"))
    base = ["train", "--model", model, "--corpus", str(corpus), *COMMON, "--layer", "1", "--d-sae", "16",
            "--target-l0", "3,5"]
    assert main([*base, "--out", str(tmp_path / "a"), "--tokens", "512"]) == 0
    assert main([*base, "--out", str(tmp_path / "b"), "--tokens", "512", "--stop-at-step", "5"]) == 0
    assert not (tmp_path / "b" / "l0_3" / "cfg.json").exists()
    assert main([*base, "--out", str(tmp_path / "b"), "--tokens", "512", "--resume"]) == 0, capsys.readouterr().err
    for name in ("l0_3", "l0_5"):
        a, b = _weights(tmp_path / "a" / name), _weights(tmp_path / "b" / name)
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)


def test_harvest_logs_progress_and_run_ends_with_a_summary(tiny_model_dir, corpus, tmp_path, caplog,
                                                           monkeypatch) -> None:
    monkeypatch.setattr(harvest, "PROGRESS_EVERY_S", 0.0)  # a line per LM batch on this tiny model
    out = tmp_path / "sae"
    with caplog.at_level(logging.INFO):
        rc = main(["train", "--model", str(tiny_model_dir("gpt2")), "--corpus", str(corpus), *COMMON,
                   "--layer", "1", "--d-sae", "16", "--target-l0", "4", "--out", str(out)])
    assert rc == 0
    messages = [r.getMessage() for r in caplog.records]
    end = next(i for i, m in enumerate(messages) if m.startswith("run summary"))
    during = [m for m in messages[:end] if m.startswith("harvesting block 0:")]
    assert during and "contexts" in during[0] and "tokens/s" in during[0]
    assert any(m.startswith("harvested block 0:") for m in messages)
    summary = json.loads((out / SUMMARY_FILE).read_text())
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert summary["l0"] == pytest.approx(last["l0"]) and summary["fvu"] == pytest.approx(last["fvu"])
    assert summary["dead_fraction"] == last["dead_fraction"] and summary["dead_window"] == last["dead_window"]
    assert summary["tokens"] == 768 and summary["steps"] == 12 and summary["tokens_per_s"] > 0
    assert summary["batch_size"] == 64 and "trained 12 steps of 64 tokens, 768 tokens" in messages[end]
    assert summary["lm_seconds"] > 0 and summary["wall_seconds"] >= summary["train_seconds"] > 0
    assert "L0" in messages[end] and "tokens/s" in messages[end]
    # The held-out check equals `jumpscope eval` on the same held-out contexts (splicing code, eval.json).
    assert main(["eval", "--sae", str(out), "--tokens", str(HELD_OUT_TOKENS), "--device", "cpu"]) == 0
    result = json.loads((out / "eval.json").read_text())
    held = summary["held_out"]
    assert held["tokens"] == result["tokens"] > 0 and held["contexts"] == result["contexts"]
    assert held["l0"] == pytest.approx(result["l0"], rel=1e-6) and held["l0"] > 0
    assert held["fvu"] == pytest.approx(result["fvu"], rel=1e-4)
    assert held["dead_fraction"] == pytest.approx(result["dead_fraction"])


def test_sweep_flags_and_bad_lists(tmp_path, capsys) -> None:
    runs = expand({"d_sae": [8, 16], "target_l0": [2.0, 4.0], "layer": 1, "out": "x"})
    assert [(r["d_sae"], r["target_l0"]) for r in runs] == [(8, 2.0), (8, 4.0), (16, 2.0), (16, 4.0)]
    assert run_name(runs[1], ["d_sae", "target_l0"]) == "d8-l0_4"
    acts = tmp_path / "acts.safetensors"
    from app.training.activations import save_activation_file

    save_activation_file(acts, torch.randn(300, 8))
    for bad, why in ((["--d-sae", "8,,16"], "empty item"), (["--d-sae", "8,8"], "repeated"),
                     (["--d-sae", "8", "--layer", "0,1"], "--hook/--layer lists need")):
        with pytest.raises(SystemExit) if why == "empty item" else _nothing():
            rc = main(["train", "--activations", str(acts), "--tokens", "256", "--batch-size", "64", *bad,
                       "--out", str(tmp_path / "o"), "--no-progress"])
            assert rc == 2 and why in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    # A sweep on an activation file: each run in its own folder.
    rc = main(["train", "--activations", str(acts), "--tokens", "256", "--batch-size", "64", "--d-sae", "8,16",
               "--out", str(tmp_path / "s"), "--no-progress"])
    assert rc == 0
    assert _weights(tmp_path / "s" / "d8")["W_enc"].shape == (8, 8)
    assert _weights(tmp_path / "s" / "d16")["W_enc"].shape == (8, 16)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
