"""The end-of-run summary's dense latents (app/training/summary.py) against the saved SAE encoding fresh planted
tokens: they are measured over the LR decay, not since step 0 (every run starts dense while the target L0 ramps)."""

from __future__ import annotations

import json

import torch

from app.cli import main
from app.sae import load_sae
from app.training.activations import save_activation_file
from app.training.config import TrainConfig
from app.training.metrics import DENSE_DENSITY
from app.training.summary import SUMMARY_FILE, format_run_summary, l0_ratio, off_target_warning
from benchmarks.synthetic_data import SETTINGS, PlantedDictionary


def test_dense_latents_are_those_of_the_trained_sae_not_of_the_dense_start(tmp_path, caplog) -> None:
    """A run that stays dense past mid-run (log θ with the encoder on x − b_dec, the pairing the defaults avoid:
    L0 ≈ 120 at step 459 of 1,024) and ends at L0 ≈ 20: counted since step 0, every latent was "dense" (100 %)."""
    truth = PlantedDictionary(SETTINGS["s2"], seed=0)  # 128 Zipfian directions in 64 dims, planted L0 ≈ 5
    x, _ = truth.sample(262_144, seed=10)
    held, _ = truth.sample(65_536, seed=20)
    data = save_activation_file(tmp_path / "acts.safetensors", x)
    out = tmp_path / "sae"
    with caplog.at_level("INFO", logger="app.training.summary"):
        assert main(["train", "--activations", str(data), "--d-sae", "128", "--target-l0", "5", "--tokens",
                     str(1024 * 1024), "--batch-size", "1024", "--seed", "0", "--threshold-param", "log",
                     "--apply-b-dec-to-input", "true", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / SUMMARY_FILE).read_text())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    sched = TrainConfig(activations=str(data), d_sae=128, target_l0=5.0, tokens=1024 * 1024, batch_size=1024,
                        out=str(out)).schedule()
    assert summary["dense_tokens"] == (sched.total_steps - sched.lr_decay_start) * 1024 > 0
    assert records[0]["dense_fraction"] == 1.0  # the dense start
    sae = load_sae(out)
    with torch.no_grad():
        density = (sae.encode(held) > 0).double().mean(0)
    reference = float((density > DENSE_DENSITY).double().mean())
    assert 0.05 < reference < 0.5 and abs(summary["dense_fraction"] - reference) <= 0.1, (summary, reference)
    assert f"of the last {summary['dense_tokens']} tokens" in caplog.text
    # this pairing ends far over its target: the summary says by how much, from the last metrics line
    assert summary["l0_ratio"] == records[-1]["l0"] / 5.0
    assert summary["l0_ratio"] > 1.1 and "L0 ended over its target" in caplog.text


def _summary(l0: float | None, target: float | None) -> dict:
    return {"out": "runs/x", "hook_name": None, "d_sae": 64, "target_l0": target, "l0_coefficient": 0.1,
            "steps": 10, "batch_size": 8, "tokens": 80, "l0": l0, "l0_ratio": l0_ratio(l0, target), "fvu": 0.1,
            "dead_fraction": 0.0, "dead_window": 80, "dense_fraction": 0.0}


def test_off_target_warning_only_outside_ten_percent_and_says_which_side() -> None:
    assert off_target_warning(_summary(7.33 * 1.0999, 7.33)) is None  # just inside ±10 % ...
    assert off_target_warning(_summary(7.33 * 0.9001, 7.33)) is None
    assert off_target_warning(_summary(7.33 * 1.1001, 7.33)) is not None  # ... and just outside
    assert off_target_warning(_summary(7.33 * 0.8999, 7.33)) is not None
    assert off_target_warning(_summary(5.0, None)) is None  # fixed λ: no target to miss
    assert off_target_warning(_summary(None, 7.33)) is None
    under = off_target_warning(_summary(6.55, 7.33))
    assert under.startswith("L0 ended under its target: 6.55 for 7.33 (0.894×")
    assert "--l0-reward" in under and "jumpscope dial --sae runs/x --target-l0 7.33" in under
    over = off_target_warning(_summary(8.9, 8.0))
    assert over.startswith("L0 ended over its target: 8.90 for 8 (1.113×") and "--l0-reward" not in over
    assert "L0 6.55 (0.894× the target)" in format_run_summary(_summary(6.55, 7.33))
    assert "the target)" not in format_run_summary(_summary(5.0, None))
