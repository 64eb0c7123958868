"""ThresholdAdam (app/training/optim.py) against torch's Adam and a step-by-step reference written here."""

from __future__ import annotations

import math

import pytest
import torch

from app.training.optim import SHARED_MOMENT, THRESHOLD_STEP_CLIP, ThresholdAdam


def _reference_shared(theta: list[float], grads: list[list[float]], lr: float, betas: tuple[float, float],
                      eps: float) -> list[float]:
    """The shared-moment update in plain Python floats, one element and one step at a time."""
    b1, b2 = betas
    m = [0.0] * len(theta)
    v = 0.0
    theta = list(theta)
    for t, g in enumerate(grads, start=1):
        v = b2 * v + (1 - b2) * sum(gi * gi for gi in g) / len(g)
        denom = math.sqrt(v / (1 - b2**t)) + eps
        for i, gi in enumerate(g):
            m[i] = b1 * m[i] + (1 - b1) * gi
            step = (m[i] / (1 - b1**t)) / denom
            theta[i] -= lr * max(-THRESHOLD_STEP_CLIP, min(THRESHOLD_STEP_CLIP, step))
    return theta


def _params(seed: int) -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return (torch.nn.Parameter(torch.randn(6, 4, generator=g, dtype=torch.float64)),
            torch.nn.Parameter(torch.rand(8, generator=g, dtype=torch.float64)))


def _grads(steps: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Gradients like θ's: mostly zero, a few large spikes (one latent carries most of a step's gradient)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        w = torch.randn(6, 4, generator=g, dtype=torch.float64)
        th = torch.randn(8, generator=g, dtype=torch.float64) * (torch.rand(8, generator=g) < 0.3)
        th[0] *= 40.0  # a latent whose gradient dwarfs the others': the clip bounds its step
        out.append((w, th))
    return out


def _run(opt_cls, shared: bool, steps: int = 12, seed: int = 0, state: dict | None = None):
    w, th = _params(seed)
    opt = opt_cls([{"params": [w], "lr": 0.01},
                   {"params": [th], "lr": 0.003, SHARED_MOMENT: shared}], betas=(0.9, 0.99), eps=1e-8)
    for gw, gth in _grads(steps, seed + 1):
        w.grad, th.grad = gw.clone(), gth.clone()
        opt.step()
    return w, th, opt  # the parameters themselves: a test may step them further


def test_shared_group_follows_the_reference_and_the_others_follow_torch_adam() -> None:
    w, th, _ = _run(ThresholdAdam, shared=True)
    w_ref, _, _ = _run(torch.optim.Adam, shared=False)
    assert torch.equal(w.detach(), w_ref.detach())  # the ordinary group is exactly torch's Adam
    th0 = _params(0)[1].detach().tolist()
    expected = _reference_shared(th0, [g[1].tolist() for g in _grads(12, 1)], 0.003, (0.9, 0.99), 1e-8)
    assert th.detach().tolist() == pytest.approx(expected, rel=1e-12, abs=1e-15)
    moved = (th.detach() - _params(0)[1].detach()).abs()
    assert float(moved.max()) <= 12 * 0.003 * THRESHOLD_STEP_CLIP + 1e-12


def test_unmarked_groups_are_plain_adam() -> None:
    _, th, _ = _run(ThresholdAdam, shared=False)
    _, th_ref, _ = _run(torch.optim.Adam, shared=False)
    assert torch.equal(th.detach(), th_ref.detach())


def test_shared_moment_makes_a_latents_step_follow_its_gradient_size() -> None:
    """Per-latent Adam moves a latent with a 100× smaller (constant) gradient as far as a large one; the
    shared moment moves it ~100× less."""
    th = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = ThresholdAdam([{"params": [th], "lr": 0.01, SHARED_MOMENT: True}], betas=(0.9, 0.99), eps=1e-12)
    ref = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    adam = torch.optim.Adam([ref], lr=0.01, betas=(0.9, 0.99), eps=1e-12)
    for _ in range(20):
        th.grad = torch.tensor([1.0, 0.01], dtype=torch.float64)
        ref.grad = th.grad.clone()
        opt.step()
        adam.step()
    with torch.no_grad():
        assert float(ref[0] / ref[1]) == pytest.approx(1.0, rel=1e-6)
        assert float(th[0] / th[1]) == pytest.approx(100.0, rel=1e-6)


def test_one_latent_carrying_the_whole_gradient_steps_at_the_clip() -> None:
    """100 latents, one with gradient 1 and the rest 0: m̂/√v̂ = 1/√(1/100) = 10, clipped to c."""
    th = torch.nn.Parameter(torch.zeros(100, dtype=torch.float64))
    opt = ThresholdAdam([{"params": [th], "lr": 0.01, SHARED_MOMENT: True}], betas=(0.9, 0.99), eps=1e-12)
    th.grad = torch.zeros(100, dtype=torch.float64)
    th.grad[7] = 1.0
    opt.step()
    assert float(th.detach()[7]) == pytest.approx(-0.01 * THRESHOLD_STEP_CLIP, rel=1e-12)
    assert int((th.detach() != 0).sum()) == 1


def test_state_dict_round_trip_continues_identically() -> None:
    _, _, opt = _run(ThresholdAdam, shared=True, steps=5)
    saved = opt.state_dict()
    assert saved["state"][1]["exp_avg_sq"].dim() == 0  # one second moment for the whole θ tensor
    w, th, fresh = _run(ThresholdAdam, shared=True, steps=5)
    fresh.load_state_dict(saved)
    w_full, th_full, _ = _run(ThresholdAdam, shared=True, steps=9)
    for gw, gth in _grads(9, 1)[5:]:
        w.grad, th.grad = gw.clone(), gth.clone()
        fresh.step()
    assert torch.equal(w.detach(), w_full.detach()) and torch.equal(th.detach(), th_full.detach())
