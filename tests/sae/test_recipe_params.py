"""The training recipe's parameter forms on the SAE: linear θ, a free decoder, and folding its row norms."""

from __future__ import annotations

import math

import pytest
import torch

from app.sae import JumpReLUSAE


def _free_sae(seed: int = 0) -> JumpReLUSAE:
    """A float64 SAE with decoder rows of random norms, random biases and a linear θ."""
    sae = JumpReLUSAE.create(8, 12, threshold=0.2, seed=seed, dtype="float64", decoder_norm=0.1)
    sae.use_linear_threshold()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        sae.W_dec.mul_(0.2 + 3 * torch.rand(12, 1, generator=g, dtype=torch.float64))
        sae.b_enc.copy_(0.1 * torch.randn(12, generator=g, dtype=torch.float64))
        sae.b_dec.copy_(0.1 * torch.randn(8, generator=g, dtype=torch.float64))
        sae.linear_threshold.copy_(0.05 + 0.2 * torch.rand(12, generator=g, dtype=torch.float64))
    return sae


def _direct(sae: JumpReLUSAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(active mask, x̂) by the textbook formulas on detached weights."""
    w_enc, b_enc, w_dec, b_dec = (t.detach() for t in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec))
    theta = sae.threshold.detach()
    pre = x @ w_enc + b_enc
    f = torch.where(pre > theta, pre, torch.zeros_like(pre))
    return pre > theta, f @ w_dec + b_dec


def test_create_scales_decoder_rows_and_ties_the_encoder() -> None:
    sae = JumpReLUSAE.create(16, 40, seed=3, decoder_norm=0.1)
    norms = torch.linalg.vector_norm(sae.W_dec.detach(), dim=1)
    assert torch.allclose(norms, torch.full_like(norms, 0.1), rtol=1e-6)
    assert torch.equal(sae.W_enc.detach(), sae.W_dec.detach().T)
    unit = JumpReLUSAE.create(16, 40, seed=3)
    assert torch.allclose(torch.linalg.vector_norm(unit.W_dec.detach(), dim=1), torch.ones(40), rtol=1e-6)


def test_linear_threshold_keeps_values_and_is_the_trained_parameter() -> None:
    sae = JumpReLUSAE.create(4, 6, threshold=0.3, seed=0, dtype="float64")
    before = sae.threshold.detach().clone()
    sae.use_linear_threshold()
    assert sae.log_threshold is None and sae.threshold_trainable
    assert sae.threshold_parameter is sae.linear_threshold
    assert torch.equal(sae.threshold.detach(), before)
    assert "linear_threshold" in dict(sae.named_parameters())
    with torch.no_grad():
        sae.linear_threshold[0] = -0.5
    sae.clamp_threshold_()
    assert float(sae.threshold.detach()[0]) == 0.0 and torch.equal(sae.threshold[1:].detach(), before[1:])
    sae.set_threshold(torch.full((6,), 0.25, dtype=torch.float64))
    assert not sae.threshold_trainable
    with pytest.raises(ValueError, match="stored"):
        _ = sae.threshold_parameter


def test_linear_threshold_moves_additively_under_adam() -> None:
    """Adam's first step moves a parameter by lr·sign(grad): θ itself moves by lr, log θ would move θ by θ·lr."""
    from app.training.step import training_step

    sae = JumpReLUSAE.create(6, 10, threshold=0.01, seed=1, bandwidth=10.0, dtype="float64")
    sae.use_linear_threshold()
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    theta0 = sae.threshold.detach().clone()
    opt = torch.optim.Adam([sae.threshold_parameter], lr=0.05)
    training_step(sae, opt, x, 1.0, grad_clip=0.0, unit_decoder=False)
    moved = (sae.threshold.detach() - theta0).abs()
    has_grad = moved > 0
    assert has_grad.any()
    assert torch.allclose(moved[has_grad], torch.full_like(moved[has_grad], 0.05), rtol=1e-6)


def test_fold_decoder_norm_keeps_reconstruction_and_active_set() -> None:
    sae = _free_sae()
    x = torch.randn(200, 8, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    active, x_hat = _direct(sae, x)
    sae.fold_decoder_norm()
    norms = torch.linalg.vector_norm(sae.W_dec.detach(), dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-12)
    active2, x_hat2 = _direct(sae, x)
    assert torch.equal(active, active2)
    assert torch.allclose(x_hat, x_hat2, atol=1e-12)
    assert torch.allclose(sae.decode(sae.encode(x)).detach(), x_hat, atol=1e-12)


@pytest.mark.parametrize("form", ["log", "stored"])
def test_fold_decoder_norm_scales_every_threshold_form(form: str) -> None:
    sae = JumpReLUSAE.create(5, 7, threshold=0.1, seed=4, dtype="float64")
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.5, 2.0, 7, dtype=torch.float64).unsqueeze(1))
    if form == "stored":
        sae.set_threshold(torch.full((7,), 0.1, dtype=torch.float64))
    sae.fold_decoder_norm()
    want = 0.1 * torch.linspace(0.5, 2.0, 7, dtype=torch.float64)
    assert torch.allclose(sae.threshold.detach(), want, rtol=1e-9)
    assert math.isclose(float(torch.linalg.vector_norm(sae.W_dec.detach()[3])), 1.0, rel_tol=1e-12)
