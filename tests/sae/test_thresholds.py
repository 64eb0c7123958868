"""θ is applied exactly as stored (SPEC §1: pre == θ is inactive); log θ exists only while θ trains."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from app.sae import JumpReLUSAE, load_sae
from app.training.step import training_step

D_IN, D_SAE = 16, 200


def _gemma_scope_npz(path, b_enc: np.ndarray, theta: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    f32 = np.float32
    np.savez(path, W_enc=rng.normal(size=(D_IN, D_SAE)).astype(f32), W_dec=rng.normal(size=(D_SAE, D_IN)).astype(f32),
             b_enc=b_enc.astype(f32), b_dec=rng.normal(size=D_IN).astype(f32), threshold=theta.astype(f32))


def test_gemma_scope_pre_equal_to_threshold_is_inactive(tmp_path):
    theta = np.random.default_rng(1).uniform(0.01, 2.0, size=D_SAE).astype(np.float32)
    _gemma_scope_npz(tmp_path / "eq.npz", b_enc=theta, theta=theta)  # x = 0 → pre = b_enc = θ exactly
    sae = load_sae(tmp_path / "eq.npz")
    x = torch.zeros(3, D_IN)
    active = int((sae.encode(x)[0] != 0).sum())
    assert active == 0, f"{active} of {D_SAE} latents fire at pre == θ"  # Gemma Scope: (pre > θ)·relu(pre) = 0
    assert torch.equal(sae.threshold, torch.from_numpy(theta))  # θ as stored, not exp(log θ)
    assert torch.equal(sae.pre_acts(x)[0], torch.from_numpy(theta))
    # One ulp above θ every latent fires: the comparison is exact, not approximately right.
    _gemma_scope_npz(tmp_path / "up.npz", b_enc=np.nextafter(theta, np.float32(np.inf)), theta=theta)
    assert bool((load_sae(tmp_path / "up.npz").encode(x) != 0).all())


def _bf16_folder(folder) -> dict[str, torch.Tensor]:
    """A native bf16 SAE folder written with safetensors directly; θ spans four decades of bf16 values."""
    gen = torch.Generator().manual_seed(0)
    w = {"W_enc": torch.randn(D_IN, D_SAE, generator=gen), "W_dec": torch.randn(D_SAE, D_IN, generator=gen),
         "b_enc": torch.randn(D_SAE, generator=gen) * 0.1, "b_dec": torch.randn(D_IN, generator=gen) * 0.1,
         "threshold": torch.exp(torch.empty(D_SAE).uniform_(-7, 2, generator=gen))}
    w = {k: v.to(torch.bfloat16).contiguous() for k, v in w.items()}
    folder.mkdir()
    save_file(w, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"architecture": "jumprelu", "d_in": D_IN, "d_sae": D_SAE,
                                                 "dtype": "bfloat16", "apply_b_dec_to_input": False}))
    return w


def test_bf16_thresholds_are_kept_bit_exact(tmp_path):
    stored = _bf16_folder(tmp_path / "bf16")
    sae = load_sae(tmp_path / "bf16")
    assert sae.dtype == torch.bfloat16 and torch.equal(sae.threshold, stored["threshold"])
    fp32 = load_sae(tmp_path / "bf16", dtype="float32")  # an fp32 reload sees the stored bf16 values
    assert fp32.threshold.dtype == torch.float32 and torch.equal(fp32.threshold, stored["threshold"].float())
    sae.save(tmp_path / "again")  # and saving writes them back unchanged
    assert torch.equal(load_file(str(tmp_path / "again" / "sae_weights.safetensors"))["threshold"],
                       stored["threshold"])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float64", "float16"])
def test_save_load_round_trips_threshold_in_every_dtype(tmp_path, dtype):
    sae = JumpReLUSAE.create(D_IN, D_SAE, seed=0)
    sae.set_threshold(torch.exp(torch.empty(D_SAE).uniform_(-9, 3, generator=torch.Generator().manual_seed(3))))
    sae.to_dtype_device(dtype=dtype)
    sae.save(tmp_path / "s")
    back = load_sae(tmp_path / "s")
    assert back.dtype == sae.dtype and torch.equal(back.threshold, sae.threshold)
    back.save(tmp_path / "t")
    assert torch.equal(load_sae(tmp_path / "t").threshold, sae.threshold)


def test_a_trained_threshold_is_saved_as_exp_log_theta_and_then_kept(tmp_path):
    sae = JumpReLUSAE.create(D_IN, D_SAE, threshold=0.05, seed=0)
    with torch.no_grad():
        sae.log_threshold.add_(torch.randn(D_SAE) * 0.3)
    assert sae.threshold_trainable and torch.equal(sae.threshold, sae.log_threshold.exp())
    sae.save(tmp_path / "s")
    back = load_sae(tmp_path / "s")
    assert not back.threshold_trainable and back.log_threshold is None
    assert torch.equal(back.threshold, sae.threshold.detach())
    assert "log_threshold" not in dict(back.named_parameters())


def test_training_needs_a_trainable_threshold(tmp_path):
    JumpReLUSAE.create(D_IN, D_SAE, threshold=0.05, seed=0).save(tmp_path / "s")
    sae = load_sae(tmp_path / "s")
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    x = torch.randn(32, D_IN)
    with pytest.raises(ValueError, match="make_threshold_trainable"):
        training_step(sae, opt, x, 1e-3)
    theta = sae.threshold.clone()
    sae.make_threshold_trainable()
    torch.testing.assert_close(sae.threshold, theta)  # exp(log θ): equal up to rounding
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    training_step(sae, opt, x, 1e-3)
    assert sae.log_threshold.grad is not None
