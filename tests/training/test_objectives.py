"""The training objectives (app/training/objectives.py) against the formulas written out directly, in float64."""

from __future__ import annotations

import json
import math

import pytest
import torch

from app.sae import JumpReLUSAE
from app.training import TrainConfig, train
from app.training.activations import save_activation_file
from app.training.objectives import loss_fn, quadratic_loss, tanh_loss
from app.training.step import training_step
from tests.training.planted import planted_activations


def _sae(d_in: int = 6, d_sae: int = 10, seed: int = 0) -> tuple[JumpReLUSAE, torch.Tensor]:
    sae = JumpReLUSAE.create(d_in, d_sae, threshold=0.3, seed=seed, bandwidth=0.5, dtype="float64")
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        sae.b_enc.copy_(0.1 * torch.randn(d_sae, generator=g, dtype=torch.float64))
        sae.log_threshold.copy_(torch.log(0.1 + 0.5 * torch.rand(d_sae, generator=g, dtype=torch.float64)))
        sae.input_scale.fill_(1.7)
    x = torch.randn(32, d_in, generator=g, dtype=torch.float64)
    return sae, x


def _direct(sae: JumpReLUSAE, x: torch.Tensor):
    """pre, θ, f, mse by the textbook formulas (no straight-through machinery)."""
    xn = x * float(sae.input_scale)
    w_enc, b_enc, w_dec, b_dec = (t.detach() for t in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec))
    theta = sae.log_threshold.detach().exp()
    pre = xn @ w_enc + b_enc
    f = torch.where(pre > theta, pre, torch.zeros_like(pre))
    mse = float(((xn - (f @ w_dec + b_dec)) ** 2).sum(1).mean())
    return pre, theta, f, mse


def test_quadratic_loss_value_and_threshold_gradient_match_the_formula() -> None:
    sae, x = _sae()
    lam, target, lam_f = 0.7, 3.0, 0.4
    out = quadratic_loss(sae, x, lam, target, lam_f)
    pre, theta, _, mse = _direct(sae, x)
    h = (pre > theta).double()
    l0 = h.sum(1)
    p = h.mean(0)
    want = mse + lam * float(((2 / target) * (l0 - target) ** 2).mean()) + lam_f * (10 / target) * float((p**2).sum())
    assert float(out.loss.detach()) == pytest.approx(want, rel=1e-12)
    assert float(out.l0.detach()) == pytest.approx(float(l0.mean()))
    # θ's gradient of the sparsity terms alone: ∂H/∂θ = −(1/ε)·K((pre − θ)/ε), ε = 0.5
    sae.zero_grad()
    (out.loss - out.mse).backward()
    k = (((pre - theta) / 0.5).abs() < 0.5).double()
    dh = -k / 0.5
    d_theta = lam * ((2 / target) * 2 * (l0 - target)).unsqueeze(1).mul(dh).mean(0)
    d_theta += lam_f * (10 / target) * 2 * p * dh.mean(0)
    torch.testing.assert_close(sae.log_threshold.grad, d_theta * theta)  # chain rule through θ = exp(log θ)


def test_one_sided_quadratic_penalises_only_the_tokens_above_the_target() -> None:
    sae, x = _sae(seed=5)
    pre, theta, _, mse = _direct(sae, x)
    l0 = (pre > theta).double().sum(1)
    target = float(l0.median())  # tokens on both sides of T
    assert bool((l0 < target).any()) and bool((l0 > target).any())
    lam = 0.7
    out = quadratic_loss(sae, x, lam, target, side="over")
    over = [max(0.0, float(n) - target) for n in l0]  # written out token by token
    want = mse + lam * sum((2 / target) * g * g for g in over) / len(over)
    assert float(out.loss.detach()) == pytest.approx(want, rel=1e-12)
    both = quadratic_loss(sae, x, lam, target, side="both")
    assert float(both.loss.detach()) > float(out.loss.detach())  # the two-sided form also counts tokens below T
    # θ's gradient comes from the tokens above T only: ∂/∂θ_i = λ·mean_t (4/T)·max(0, L0_t − T)·∂H_ti/∂θ_i
    sae.zero_grad()
    (out.loss - out.mse).backward()
    dh = -(((pre - theta) / 0.5).abs() < 0.5).double() / 0.5
    gap = (l0 - target).clamp_min(0)
    d_theta = lam * ((4 / target) * gap).unsqueeze(1).mul(dh).mean(0)
    torch.testing.assert_close(sae.log_threshold.grad, d_theta * theta)
    with pytest.raises(ValueError, match="unknown quadratic side"):
        quadratic_loss(sae, x, lam, target, side="under")
    with pytest.raises(ValueError, match="--quadratic-side must be"):
        TrainConfig(activations="a", out="o", d_sae=8, tokens=4096, target_l0=2.0, quadratic_side="under")
    assert TrainConfig(activations="a", out="o", d_sae=8, tokens=4096, target_l0=2.0).quadratic_side == "over"


def test_the_l0_reward_adds_lambda_r_l0_and_pushes_every_threshold_down() -> None:
    sae, x = _sae(seed=7)
    pre, theta, _, mse = _direct(sae, x)
    l0 = (pre > theta).double().sum(1)
    lam, target, reward = 0.7, 3.0, -1.5
    out = quadratic_loss(sae, x, lam, target, 0.4, side="over", reward=reward)
    p = (pre > theta).double().mean(0)
    over = (l0 - target).clamp_min(0)
    want = mse + lam * float(((2 / target) * over**2).mean()) + 0.4 * (10 / target) * float((p**2).sum()) \
        + lam * reward * float(l0.mean())
    assert float(out.loss.detach()) == pytest.approx(want, rel=1e-12)
    # the reward's own θ gradient: λ·r·mean_t ∂H_ti/∂θ_i, ≥ 0 for r < 0 (so Adam lowers θ: more firing)
    plain = quadratic_loss(sae, x, lam, target, 0.4, side="over")
    sae.zero_grad()
    (out.loss - plain.loss).backward()
    dh = -(((pre - theta) / 0.5).abs() < 0.5).double() / 0.5
    d_theta = lam * reward * dh.mean(0)
    torch.testing.assert_close(sae.log_threshold.grad, d_theta * theta)
    assert bool((d_theta >= 0).all()) and bool((d_theta > 0).any())
    assert float(quadratic_loss(sae, x, lam, target, reward=0.0).loss.detach()) == pytest.approx(
        float(quadratic_loss(sae, x, lam, target).loss.detach()), rel=1e-15)


def test_tanh_loss_value_matches_the_formula_and_the_pre_act_term_reaches_the_encoder() -> None:
    sae, x = _sae(seed=3)
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.5, 2.0, 10, dtype=torch.float64).unsqueeze(1))  # non-unit rows
    lam, c, lam_p = 0.2, 4.0, 0.05
    out = tanh_loss(sae, x, lam, c, lam_p)
    pre, theta, f, mse = _direct(sae, x)
    wn = sae.W_dec.detach().norm(dim=1)
    want = mse + lam * float(torch.tanh(c * f * wn).sum(1).mean()) + lam_p * float(((theta - pre).clamp_min(0) * wn)
                                                                                    .sum(1).mean())
    assert float(out.loss.detach()) == pytest.approx(want, rel=1e-12)
    assert float(out.l0) == pytest.approx(float((pre > theta).double().sum(1).mean()))
    # the pre-activation term alone: ∂/∂b_enc = −λ_p · mean_batch 1[pre < θ] · ‖W_dec‖
    sae.zero_grad()
    pre_only = tanh_loss(sae, x, 0.0, c, lam_p)
    (pre_only.loss - pre_only.mse).backward()
    want_grad = -lam_p * ((pre < theta).double() * wn).mean(0)
    torch.testing.assert_close(sae.b_enc.grad, want_grad)


def test_step_objective_is_the_saes_own_loss_and_unknown_names_are_refused() -> None:
    assert loss_fn("step") is None
    with pytest.raises(ValueError, match="target-l0"):
        loss_fn("quadratic")
    with pytest.raises(ValueError, match="unknown objective"):
        loss_fn("l1")
    with pytest.raises(ValueError, match="--objective must be"):
        TrainConfig(activations="a", out="o", d_sae=8, tokens=4096, objective="l1")
    with pytest.raises(ValueError, match="needs --target-l0"):
        TrainConfig(activations="a", out="o", d_sae=8, tokens=4096, l0_coefficient=1.0, objective="quadratic")


def test_training_step_uses_the_given_objective() -> None:
    sae, x = _sae()
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    fn = loss_fn("tanh", tanh_scale=2.0, pre_act_coefficient=0.0)
    out = training_step(sae, opt, x, 0.3, loss_fn=fn)
    want = tanh_loss(*_sae(), 0.3, 2.0, 0.0)  # the same objective on a fresh copy of the same SAE
    assert float(out.loss.detach()) == pytest.approx(float(want.loss.detach()), rel=1e-12)
    assert float(out.loss.detach()) > float(out.mse.detach()) and math.isfinite(float(out.loss.detach()))


@pytest.mark.slow  # ~10 s each on an idle 2-core CPU, minutes on a loaded one
@pytest.mark.parametrize("objective", ["quadratic", "tanh"])
def test_each_objective_trains_to_the_target_l0(tmp_path, objective) -> None:
    x, _, planted = planted_activations(30_000, d_in=16, n_true=32, l0=3.0, seed=2)
    data = save_activation_file(tmp_path / "acts.safetensors", x)
    cfg = TrainConfig(activations=str(data), out=str(tmp_path / "sae"), d_sae=32, target_l0=planted,
                      tokens=1024 * 120, batch_size=1024, objective=objective, progress=False, device="cpu",
                      checkpoint_every=0)
    out = train(cfg)
    last = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    assert abs(last["l0"] - planted) <= 0.35 * planted, last
    assert last["fvu"] < 0.6, last
