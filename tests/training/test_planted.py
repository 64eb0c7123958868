"""Ground truth: an SAE trained through the CLI with default settings recovers a planted sparse dictionary."""

from __future__ import annotations

import json

import torch

from app.cli import main
from app.sae import load_sae
from app.training.activations import save_activation_file
from app.training.metrics import fvu
from tests.training.planted import planted_activations


def test_cli_defaults_recover_a_planted_dictionary(tmp_path) -> None:
    # 200 unit directions in superposition in 96 dims, each active on 1.5 % of tokens (planted L0 ≈ 3).
    x, dirs, planted_l0 = planted_activations(120_000, d_in=96, n_true=200, l0=3.0, seed=0)
    data = save_activation_file(tmp_path / "acts.safetensors", x[:100_000])
    out = tmp_path / "sae"
    rc = main(["train", "--activations", str(data), "--d-sae", "400", "--target-l0", f"{planted_l0:.3f}",
               "--tokens", str(4096 * 300), "--out", str(out), "--no-progress"])
    assert rc == 0
    sae = load_sae(out)
    held_out = x[100_000:]
    with torch.no_grad():
        f = sae.encode(held_out)
        x_hat = sae.decode(f)
    w = sae.W_dec.detach() / sae.W_dec.detach().norm(dim=1, keepdim=True)
    cosine = float((dirs @ w.T).max(1).values.mean())
    l0 = float((f > 0).sum(1).double().mean())
    score = fvu(held_out, x_hat)
    (tmp_path / "result.json").write_text(json.dumps({"cos": cosine, "l0": l0, "fvu": score}))
    assert cosine >= 0.9, (cosine, l0, score)
    assert score <= 0.15, (cosine, l0, score)
    assert abs(l0 - planted_l0) <= 0.25 * planted_l0, (cosine, l0, score)
