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
from app.training.summary import SUMMARY_FILE
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
