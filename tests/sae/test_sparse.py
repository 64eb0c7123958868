"""The sparse training path gives the dense reference's loss, outputs and gradients (SPEC §1 STE formulas)."""

from __future__ import annotations

import pytest
import torch

from app.sae.jumprelu import JumpReLUSAE, rectangle
from app.sae.sparse import SPARSE_MAX_DENSITY

D_IN, D_SAE = 12, 48


def _sae(dtype: str, target_density: float, apply_b_dec: bool = False, bandwidth: float = 0.05) -> JumpReLUSAE:
    """Random SAE whose thresholds sit at the (1 − density) quantile of each latent's pre-activations."""
    sae = JumpReLUSAE.create(D_IN, D_SAE, seed=1, dtype=dtype, bandwidth=bandwidth,
                             apply_b_dec_to_input=apply_b_dec)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(D_SAE, generator=gen) * 0.1)
        sae.b_dec.copy_(torch.randn(D_IN, generator=gen) * 0.1)
        sae.input_scale.fill_(0.7)
        probe = torch.randn(512, D_IN, generator=gen, dtype=sae.dtype)
        pre = sae.pre_acts(probe)
        theta = torch.quantile(pre, 1 - target_density, dim=0).clamp_min(1e-3)
        sae.log_threshold.copy_(theta.log())
    return sae


def _batch(sae: JumpReLUSAE, seed: int = 3) -> torch.Tensor:
    """[2, 20, d_in] random tokens; token [0, 0] is zero, so its pre-activations equal b_enc exactly."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 20, D_IN, generator=gen, dtype=sae.dtype)
    x[0, 0] = 0.0
    return x


def _grads(sae: JumpReLUSAE, x: torch.Tensor, lam: float, sparse: bool, extra: bool):
    sae.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    out = sae(x, lam, sparse=sparse)
    loss = out.loss
    if extra:  # gradients that arrive through x̂ and the latents too, not only through the loss
        loss = loss + 0.3 * out.x_hat.pow(2).sum() + 0.2 * out.latents.sum()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in sae.named_parameters()}
    grads["x"] = x.grad.clone()
    values = {"loss": out.loss, "mse": out.mse, "l0": out.l0, "x_hat": out.x_hat, "latents": out.latents}
    return {k: v.detach() for k, v in values.items()}, grads


def _assert_same(dense: dict, sparse: dict, dtype: str) -> None:
    rtol, atol = (1e-10, 1e-12) if dtype == "float64" else (1e-5, 1e-5)
    for name in dense:
        torch.testing.assert_close(sparse[name], dense[name], rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("density", [0.02, 0.1, 0.5])
@pytest.mark.parametrize("apply_b_dec", [False, True])
@pytest.mark.parametrize("extra", [False, True])
def test_sparse_matches_dense(dtype: str, density: float, apply_b_dec: bool, extra: bool) -> None:
    sae = _sae(dtype, density, apply_b_dec)
    x = _batch(sae)
    d_vals, d_grads = _grads(sae, x, 0.3, sparse=False, extra=extra)
    s_vals, s_grads = _grads(sae, x, 0.3, sparse=True, extra=extra)
    _assert_same(d_vals, s_vals, dtype)
    _assert_same(d_grads, s_grads, dtype)
    assert float(d_vals["l0"]) > 0
    assert d_grads["log_threshold"].abs().sum() > 0  # the STE window is populated


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_boundary_and_window_pairs(dtype: str) -> None:
    """pre == θ exactly (inactive, inside the window) and pre = θ ± ε/4 get the reference's gradients."""
    eps = 0.05
    sae = _sae(dtype, 0.1, bandwidth=eps)
    x = _batch(sae)
    theta = sae.threshold.detach()
    with torch.no_grad():
        sae.b_enc.copy_(theta)  # token [0, 0] is zero → pre == θ for every latent
    # Token [1, 0]: shift pre to θ ± ε/4 by solving for an input along W_enc (least squares is enough
    # to land most latents inside the window; the test checks that it does).
    pre_now = sae.pre_acts(x[1, :1]).detach()[0]
    sign = torch.where(torch.arange(D_SAE) % 2 == 0, 1.0, -1.0).to(theta.dtype)
    target = theta + sign * eps / 4
    w = sae.W_enc.detach() * sae.input_scale
    delta = torch.linalg.lstsq(w.T, (target - pre_now).unsqueeze(1)).solution[:, 0]
    x[1, 0] += delta
    pre = sae.pre_acts(x).detach()
    on_boundary = pre[0, 0] == theta
    assert bool(on_boundary.all())
    in_window = rectangle((pre - theta) / eps).sum()
    assert in_window > D_SAE  # the boundary token alone gives D_SAE
    d_vals, d_grads = _grads(sae, x, 0.7, sparse=False, extra=False)
    s_vals, s_grads = _grads(sae, x, 0.7, sparse=True, extra=False)
    assert not bool(s_vals["latents"][0, 0].any())  # pre == θ is inactive
    _assert_same(d_vals, s_vals, dtype)
    _assert_same(d_grads, s_grads, dtype)


def test_no_active_pairs() -> None:
    """A batch where nothing fires: zero latents, gradients still equal the dense ones."""
    sae = _sae("float64", 0.02)
    with torch.no_grad():
        sae.log_threshold.fill_(5.0)
    x = _batch(sae)
    d_vals, d_grads = _grads(sae, x, 0.3, sparse=False, extra=False)
    s_vals, s_grads = _grads(sae, x, 0.3, sparse=True, extra=False)
    assert float(s_vals["l0"]) == 0.0
    _assert_same(d_vals, s_vals, "float64")
    _assert_same(d_grads, s_grads, "float64")


def test_dispatch_dense_at_high_l0_sparse_at_low_l0() -> None:
    dense_sae = _sae("float32", 0.5)
    x = _batch(dense_sae)
    assert not dense_sae._use_sparse(None)  # nothing measured yet → dense
    dense_sae(x, 0.1)
    assert float(dense_sae._active_fraction) > SPARSE_MAX_DENSITY
    assert not dense_sae._use_sparse(None)

    sparse_sae = _sae("float32", SPARSE_MAX_DENSITY / 4)
    sparse_sae(x, 0.1)
    assert float(sparse_sae._active_fraction) < SPARSE_MAX_DENSITY
    assert sparse_sae._use_sparse(None)
    assert not sparse_sae._use_sparse(False)  # explicit choice wins
    with torch.no_grad():
        assert not sparse_sae._use_sparse(None)  # inference stays on the dense reference
    sparse_sae.requires_grad_(False)
    assert not sparse_sae._use_sparse(None)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("density", [0.01, 0.1])
def test_sparse_matches_dense_cuda(density: float) -> None:
    sae = _sae("float32", density)
    x = _batch(sae).to("cuda")
    sae.to("cuda")
    d_vals, d_grads = _grads(sae, x, 0.3, sparse=False, extra=True)
    s_vals, s_grads = _grads(sae, x, 0.3, sparse=True, extra=True)
    _assert_same(d_vals, s_vals, "float32")
    _assert_same(d_grads, s_grads, "float32")


def test_autocast_runs_encoder_in_bf16_and_keeps_fp32_gradients() -> None:
    """Under bf16 autocast only the encoder matmul is bf16: values near the fp32 ones, fp32 gradients."""
    sae = _sae("float32", 0.1)
    x = _batch(sae)
    ref_vals, ref_grads = _grads(sae, x, 0.3, sparse=False, extra=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        vals, grads = _grads(sae, x, 0.3, sparse=True, extra=False)
    assert vals["x_hat"].dtype == torch.float32 and vals["latents"].dtype == torch.float32
    torch.testing.assert_close(vals["mse"], ref_vals["mse"], rtol=5e-2, atol=1e-3)
    for name, g in grads.items():
        assert g.dtype == torch.float32 and torch.isfinite(g).all(), name
    torch.testing.assert_close(grads["W_dec"], ref_grads["W_dec"], rtol=0.2, atol=0.05)


@pytest.mark.parametrize("frequency", [0.0, 0.4])
@pytest.mark.parametrize("linear", [False, True])
@pytest.mark.parametrize("density", [0.02, 0.1])
def test_quadratic_objective_sparse_matches_dense(density: float, linear: bool, frequency: float) -> None:
    """Gemma Scope 2's quadratic penalty weighs each token's L0 by (L0_b − T), and its frequency penalty each
    latent's firing by p_i: the per-token L0 and per-latent counts of the sparse path must carry those weights
    into θ's gradient exactly as the dense reference does."""
    from app.training.objectives import quadratic_loss

    results = []
    for sparse in (False, True):
        sae = _sae("float64", density)
        if linear:
            sae.use_linear_threshold()
        x = _batch(sae)
        out = quadratic_loss(sae, x, 0.7, target_l0=1.5, frequency_coefficient=frequency, sparse=sparse,
                             reward=-0.2)
        sae.zero_grad(set_to_none=True)
        out.loss.backward()
        grads = {name: p.grad.clone() for name, p in sae.named_parameters()}
        results.append(({"loss": out.loss.detach(), "l0": out.l0.detach(), "mse": out.mse.detach()}, grads))
    (dense_v, dense_g), (sparse_v, sparse_g) = results
    _assert_same(dense_v, sparse_v, "float64")
    _assert_same(dense_g, sparse_g, "float64")
    theta_grad = dense_g["linear_threshold" if linear else "log_threshold"]
    assert theta_grad.abs().sum() > 0  # the window holds pairs: the comparison is not of zeros


@pytest.mark.parametrize("sparse", [False, True])
def test_latent_counts_and_their_threshold_gradient_match_the_formula(sparse: bool) -> None:
    """c_i = Σ_tokens H(pre_i − θ_i), and ∂(Σ_i w_i·c_i)/∂θ_i = −(w_i/ε)·Σ_tokens K((pre_i − θ_i)/ε) (SPEC §1 STE),
    written out from the pre-activations on either path."""
    sae = _sae("float64", 0.05)
    x = _batch(sae)
    parts = sae.loss_parts(x, sparse=sparse)
    pre = sae.pre_acts(x).detach().reshape(-1, D_SAE)
    theta, eps = sae.threshold.detach(), sae.cfg.bandwidth
    torch.testing.assert_close(parts.latent_counts.detach(), (pre > theta).double().sum(0), rtol=0, atol=0)
    assert parts.latent_counts.sum() == parts.l0_tokens.sum()
    w = torch.linspace(-1.0, 2.0, D_SAE, dtype=torch.float64)
    sae.zero_grad(set_to_none=True)
    (w * parts.latent_counts).sum().backward()
    window = rectangle((pre - theta) / eps).sum(0)
    assert window.sum() > 0  # some pairs sit in the STE window: the gradient is not trivially zero
    torch.testing.assert_close(sae.log_threshold.grad, -(w / eps) * window * theta)  # through θ = exp(log θ)
    assert sae.W_enc.grad is None or torch.all(sae.W_enc.grad == 0)  # ∂H/∂pre = 0
