"""JumpReLU math of SPEC §1: forward, STE gradients, numpy reference, normalisation folding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from app.sae import JumpReLUSAE, SAEConfig, jumprelu, step


def test_ste_gradients_match_spec_on_hand_checked_example():
    # One latent, θ = 2, ε = 0.2; four tokens at pre = 1, 2 (== θ: inactive), 2.05, 3.
    # u = (pre − θ)/ε = −5, 0, 0.25, 5  →  K(u) = 0, 1, 1, 0.
    pre = torch.tensor([[1.0], [2.0], [2.05], [3.0]], dtype=torch.float64, requires_grad=True)
    log_theta = torch.tensor([math.log(2.0)], dtype=torch.float64, requires_grad=True)
    f = jumprelu(pre, log_theta.exp(), 0.2)
    assert f.squeeze(1).tolist() == [0.0, 0.0, 2.05, 3.0]  # pre == θ is inactive
    f.sum().backward()
    # ∂f/∂pre = H(pre − θ)
    assert pre.grad.squeeze(1).tolist() == [0.0, 0.0, 1.0, 1.0]
    # ∂Σf/∂θ = Σ −(θ/ε)K = 2 × −10 = −20; through θ = exp(logθ): × θ = −40
    assert log_theta.grad.item() == pytest.approx(-40.0)

    pre2 = pre.detach().clone().requires_grad_(True)
    log_theta2 = torch.tensor([math.log(2.0)], dtype=torch.float64, requires_grad=True)
    h = step(pre2, log_theta2.exp(), 0.2)
    assert h.squeeze(1).tolist() == [0.0, 0.0, 1.0, 1.0]
    h.sum().backward()
    assert pre2.grad is None or torch.all(pre2.grad == 0)  # ∂H/∂pre = 0
    # ∂ΣH/∂θ = Σ −(1/ε)K = 2 × −5 = −10; × θ = −20
    assert log_theta2.grad.item() == pytest.approx(-20.0)


def test_forward_loss_parts_and_l0_gradient_on_pre_not_f():
    torch.manual_seed(0)
    sae = JumpReLUSAE.create(6, 10, threshold=0.3, seed=1, bandwidth=0.5, dtype="float64")
    x = torch.randn(16, 6, dtype=torch.float64)
    out = sae(x, l0_coefficient=0.1)
    pre = x @ sae.W_enc + sae.b_enc
    active = pre > sae.threshold
    x_hat = (pre * active) @ sae.W_dec + sae.b_dec
    assert torch.allclose(out.x_hat, x_hat)
    assert out.mse.item() == pytest.approx(((x - x_hat) ** 2).sum(-1).mean().item())
    assert out.l0.item() == pytest.approx(active.sum(-1).double().mean().item())
    assert out.loss.item() == pytest.approx(out.mse.item() + 0.1 * out.l0.item())
    # λ·L0 must push θ only through the step kernel computed on pre:
    sae.zero_grad()
    (0.1 * out.l0).backward()
    theta, eps = sae.threshold.detach(), sae.cfg.bandwidth
    k = (((pre.detach() - theta) / eps).abs() < 0.5).double()
    expected = 0.1 * (-(1 / eps) * k).sum(0) / x.shape[0] * theta
    assert torch.allclose(sae.log_threshold.grad, expected)
    assert sae.W_enc.grad is None or torch.all(sae.W_enc.grad == 0)


def _numpy_encode(x, W_enc, b_enc, theta):
    pre = x @ W_enc + b_enc
    return pre * (pre > theta)


def test_encode_decode_match_numpy_reference():
    sae = JumpReLUSAE.create(8, 32, threshold=0.2, seed=3)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.1)
    x = torch.randn(20, 8)
    W_enc, b_enc = sae.W_enc.detach().numpy(), sae.b_enc.detach().numpy()
    W_dec, b_dec = sae.W_dec.detach().numpy(), sae.b_dec.detach().numpy()
    f_ref = _numpy_encode(x.numpy(), W_enc, b_enc, sae.threshold.detach().numpy())
    f = sae.encode(x).detach()
    np.testing.assert_allclose(f.numpy(), f_ref, rtol=1e-5, atol=1e-6)
    assert 0 < (f_ref > 0).mean() < 1  # some but not all latents active: the test means something
    np.testing.assert_allclose(sae.decode(f).detach().numpy(), f_ref @ W_dec + b_dec, rtol=1e-5, atol=1e-5)


def test_init_follows_recipe():
    sae = JumpReLUSAE.create(16, 64, seed=0)
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(64), atol=1e-6)
    assert torch.equal(sae.W_enc, sae.W_dec.T)
    assert torch.all(sae.b_enc == 0) and torch.all(sae.b_dec == 0)
    assert torch.allclose(sae.threshold, torch.full((64,), 0.001))


def test_fold_input_scale_preserves_latents_and_reconstruction():
    sae = JumpReLUSAE.create(8, 24, threshold=0.05, seed=2, dtype="float64")
    with torch.no_grad():
        sae.input_scale.fill_(0.25)
        sae.b_dec.normal_()
    x = torch.randn(10, 8, dtype=torch.float64) * 4
    f, x_hat = sae.encode(x), sae.decode(sae.encode(x))
    sae.fold_input_scale()
    assert sae.input_scale.item() == 1.0
    assert torch.allclose(sae.encode(x), f)
    assert torch.allclose(sae.decode(sae.encode(x)), x_hat)


@pytest.mark.parametrize("apply_b_dec", [False, True])
def test_fold_input_mean_takes_raw_x_as_the_centred_sae_took_x_minus_mean(apply_b_dec):
    """Reference written out by hand: the unfolded SAE fed x − μ, its reconstruction shifted back by μ."""
    sae = JumpReLUSAE.create(8, 24, threshold=0.05, seed=3, dtype="float64", apply_b_dec_to_input=apply_b_dec)
    with torch.no_grad():
        sae.input_scale.fill_(0.2)
        sae.b_dec.normal_()
        sae.b_enc.normal_(std=0.1)
    mu = torch.randn(8, dtype=torch.float64) * 50  # a mean far larger than the spread, as in Gemma 3's layer 9
    x = mu + torch.randn(40, 8, dtype=torch.float64) * 3
    s, W_enc, b_enc, W_dec, b_dec = 0.2, sae.W_enc.clone(), sae.b_enc.clone(), sae.W_dec.clone(), sae.b_dec.clone()
    x_in = s * (x - mu) - (b_dec if apply_b_dec else 0)
    pre = x_in @ W_enc + b_enc
    f_ref = pre * (pre > sae.threshold)
    x_hat_ref = (f_ref @ W_dec + b_dec) / s + mu
    assert (f_ref > 0).any() and not (f_ref > 0).all()
    sae.fold_input_mean(mu)
    assert torch.allclose(sae.encode(x), f_ref)
    assert torch.allclose(sae.decode(sae.encode(x)), x_hat_ref)
    sae.fold_input_scale()  # the order the trainer folds in: μ first, then s
    assert torch.allclose(sae.encode(x), f_ref)
    assert torch.allclose(sae.decode(sae.encode(x)), x_hat_ref)
    with pytest.raises(ValueError, match="shape"):
        sae.fold_input_mean(torch.zeros(7))


def test_apply_b_dec_to_input_encodes_x_minus_b_dec():
    sae = JumpReLUSAE.create(4, 8, threshold=0.01, seed=0, apply_b_dec_to_input=True)
    with torch.no_grad():
        sae.b_dec.fill_(0.5)
    x = torch.randn(3, 4)
    assert torch.allclose(sae.pre_acts(x), (x - 0.5) @ sae.W_enc + sae.b_enc)


@pytest.mark.parametrize("sparse", [False, True])
def test_b_dec_learns_through_the_encoder_when_applied_to_input(sparse):
    """The trainer's --apply-b-dec-to-input: b_dec's gradient is that of a loss written out here, in which b_dec is
    the encoder's reference point as well as the decoder's bias. The L0 term adds none (∂H/∂pre = 0, SPEC §1)."""
    grads = {}
    for apply_b_dec in (False, True):
        sae = JumpReLUSAE.create(8, 24, threshold=0.05, seed=3, dtype="float64", apply_b_dec_to_input=apply_b_dec)
        with torch.no_grad():
            sae.input_scale.fill_(0.7)
            sae.b_dec.copy_(torch.linspace(-1, 1, 8, dtype=torch.float64))
            sae.b_enc.copy_(torch.linspace(-0.1, 0.1, 24, dtype=torch.float64))
        x = torch.randn(64, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 2
        sae(x, 0.3, sparse=sparse).loss.backward()
        b_dec = sae.b_dec.detach().clone().requires_grad_(True)
        x_n = 0.7 * x
        pre = (x_n - b_dec if apply_b_dec else x_n) @ sae.W_enc.detach() + sae.b_enc.detach()
        f = pre * (pre > sae.threshold.detach())
        assert 0 < float((f > 0).double().mean()) < 0.9
        ((x_n - (f @ sae.W_dec.detach() + b_dec)).pow(2).sum(-1).mean()).backward()
        assert torch.allclose(sae.b_dec.grad, b_dec.grad, rtol=1e-10, atol=1e-12), apply_b_dec
        grads[apply_b_dec] = b_dec.grad
    assert not torch.allclose(grads[False], grads[True], rtol=0.05)  # the encoder path is not negligible here


def test_dtype_and_device_moves_keep_cfg_in_step():
    sae = JumpReLUSAE.create(4, 8)
    sae.to_dtype_device(dtype="bfloat16", device="cpu")
    assert sae.dtype == torch.bfloat16 and sae.cfg.dtype == "bfloat16"
    assert sae.encode(torch.randn(2, 4)).dtype == torch.bfloat16


@pytest.mark.parametrize("kwargs", [dict(d_in=0, d_sae=4), dict(d_in=4, d_sae=4, bandwidth=0.0),
                                    dict(d_in=4, d_sae=4, dtype="int7")])
def test_config_validates(kwargs):
    with pytest.raises(ValueError):
        SAEConfig(**kwargs)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_encode_on_cuda_matches_cpu():
    sae = JumpReLUSAE.create(8, 32, threshold=0.1, seed=0)
    x = torch.randn(5, 8)
    ref = sae.encode(x)
    assert torch.allclose(sae.to_dtype_device(device="cuda").encode(x.cuda()).cpu(), ref, atol=1e-5)


@pytest.mark.parametrize("param", ["log", "linear"])
def test_assign_threshold_writes_theta_for_the_chosen_latents_only(param):
    sae = JumpReLUSAE.create(d_in=4, d_sae=6, threshold=0.3, seed=0)
    if param == "linear":
        sae.use_linear_threshold()
    before = sae.threshold.detach().clone()
    sae.assign_threshold_(torch.tensor([1, 4]), torch.tensor([0.7, 0.0]))
    after = sae.threshold.detach()
    assert float(after[1]) == pytest.approx(0.7, rel=1e-6)
    assert float(after[4]) == 0.0 if param == "linear" else 0.0 < float(after[4]) < 1e-30  # log θ: smallest float
    assert torch.equal(after[[0, 2, 3, 5]], before[[0, 2, 3, 5]])
    assert sae.threshold_parameter.requires_grad  # still the parameter the optimiser holds
    sae.set_threshold(before)
    with pytest.raises(ValueError, match="stored"):
        sae.assign_threshold_(torch.tensor([0]), torch.tensor([0.1]))
