"""AuxK for dead and collapsed latents (app/training/objectives.py: dead_aux_loss, with_dead_aux, aux_latents) against
brute forces."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch

from app.sae import JumpReLUSAE
from app.training import TrainConfig, train
from app.training import trainer as trainer_module
from app.training.activations import save_activation_file
from app.training.objectives import (
    aux_latents,
    dead_aux_loss,
    dead_max_pre,
    lower_thresholds_,
    quadratic_loss,
    with_dead_aux,
)
from tests.training.gains import gain_brute
from tests.training.planted import planted_activations


def _sae(d_in: int = 5, d_sae: int = 12, seed: int = 0) -> tuple[JumpReLUSAE, torch.Tensor]:
    sae = JumpReLUSAE.create(d_in, d_sae, threshold=0.2, seed=seed, bandwidth=0.5, dtype="float64")
    g = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        sae.b_enc.copy_(0.2 * torch.randn(d_sae, generator=g, dtype=torch.float64))
        sae.W_dec.mul_(torch.linspace(0.3, 1.5, d_sae, dtype=torch.float64).unsqueeze(1))
        sae.input_scale.fill_(1.3)
    return sae, torch.randn(40, d_in, generator=g, dtype=torch.float64)


def _brute(sae: JumpReLUSAE, x: torch.Tensor, x_hat_n: torch.Tensor, dead: list[int], k: int) -> torch.Tensor:
    """‖e − ê‖²/‖e‖² summed token by token: each token's k largest ReLU pre-activations among `dead`."""
    xn = x * sae.input_scale
    e = (xn - x_hat_n).detach()
    num = torch.zeros((), dtype=x.dtype)
    for t in range(x.shape[0]):
        pre = {i: torch.relu(xn[t] @ sae.W_enc[:, i] + sae.b_enc[i]) for i in dead}
        chosen = sorted(dead, key=lambda i: float(pre[i].detach()), reverse=True)[:k]
        e_hat = sum((pre[i] * sae.W_dec[i] for i in chosen), torch.zeros_like(e[t]))
        num = num + (e[t] - e_hat).pow(2).sum()
    return num / e.pow(2).sum()


@pytest.mark.parametrize("k", [1, 3, 20])
def test_dead_aux_loss_value_and_gradients_match_a_per_token_brute_force(k: int) -> None:
    sae, x = _sae()
    dead = [1, 4, 5, 9, 11]
    x_hat_n = sae(x, 0.0).x_hat.detach() * sae.input_scale
    got = dead_aux_loss(sae, x, x_hat_n, torch.tensor(dead), k)
    grads = torch.autograd.grad(got, [sae.W_enc, sae.b_enc, sae.W_dec])
    want = _brute(sae, x, x_hat_n, dead, k)
    want_grads = torch.autograd.grad(want, [sae.W_enc, sae.b_enc, sae.W_dec])
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    for g, w in zip(grads, want_grads):
        torch.testing.assert_close(g, w)
    live = [i for i in range(sae.d_sae) if i not in dead]  # only the dead latents learn from it
    assert float(grads[0][:, live].abs().sum() + grads[1][live].abs().sum() + grads[2][live].abs().sum()) == 0
    assert float(grads[2][dead].abs().sum()) > 0


def test_with_dead_aux_adds_alpha_times_auxk_to_the_objective() -> None:
    sae, x = _sae(seed=2)
    dead = torch.tensor([0, 3, 7])
    base = lambda s, xb, lam: quadratic_loss(s, xb, lam, 2.0)  # noqa: E731
    out = with_dead_aux(base, dead, 0.25, 2)(sae, x, 0.5)
    plain = base(sae, x, 0.5)
    aux = dead_aux_loss(sae, x, plain.x_hat * sae.input_scale, dead, 2)
    assert out.loss.item() == pytest.approx((plain.loss + 0.25 * aux).item(), rel=1e-12)
    own = with_dead_aux(None, dead, 0.25, 2)(sae, x, 0.5)  # None: the SAE's own loss (mse + λ·L0)
    assert own.loss.item() == pytest.approx((sae(x, 0.5).loss + 0.25 * aux).item(), rel=1e-12)


@pytest.mark.parametrize("share", [0.0, 0.33, 0.8])
def test_aux_latents_are_the_dead_and_the_collapsed(share: float) -> None:
    sae, _ = _sae(seed=5)
    with torch.no_grad():
        sae.W_dec[2] *= 0.05  # a short decoder row: collapsed at any share above 0.05 × ...
        sae.W_enc[:, 6] *= 0.1  # ... and a short encoder column
    dead = torch.tensor([0, 2, 9])
    got = aux_latents(sae, dead, share).tolist()
    assert got == sorted(set(got))  # each once, sorted
    if share == 0:
        assert got == dead.tolist()
        return
    inside, outside = gain_brute(sae, share)
    assert (inside | set(dead.tolist())) <= set(got)
    assert not (set(got) - set(dead.tolist())) & outside
    assert {2, 6} <= set(got)


@pytest.mark.parametrize(("through_decay", "share"), [(True, 0.33), (False, 0.33), (True, 0.0)])
def test_the_trainer_applies_auxk_to_the_dead_and_collapsed_latents_only(tmp_path, monkeypatch, through_decay: bool,
                                                                         share: float) -> None:
    """AuxK reaches the latents silent for its window and, with --aux-collapse-share, those whose gain is under
    that share of the median (checked against a float64 brute force at each step); to the last step by default,
    or until the LR decay begins."""
    x, _, planted = planted_activations(20_000, d_in=8, n_true=12, l0=2.0, seed=4)
    data = save_activation_file(tmp_path / "acts.safetensors", x)
    calls: list[tuple[int, torch.Tensor]] = []
    collapsed: list[int] = []  # latents AuxK trained that were not dead, per step
    real = trainer_module.with_dead_aux

    def spy(objective, latents, coefficient, k):
        frame = sys._getframe(1).f_locals  # the trainer loop's step, SAE and stats
        dead = set((frame["stats"].since_fired >= 1024).nonzero().squeeze(1).tolist())
        inside, outside = gain_brute(frame["sae"], share) if share else (set(), set(range(64)))
        assert (dead | inside) <= set(latents.tolist())
        assert not (set(latents.tolist()) - dead) & outside
        calls.append((frame["step"], latents.clone()))
        collapsed.append(len(set(latents.tolist()) - dead))
        return real(objective, latents, coefficient, k)

    monkeypatch.setattr(trainer_module, "with_dead_aux", spy)
    cfg = TrainConfig(activations=str(data), out=str(tmp_path / "sae"), d_sae=64, target_l0=planted,
                      tokens=512 * 60, batch_size=512, progress=False, device="cpu", checkpoint_every=0,
                      aux_dead_window=1024, aux_through_decay=through_decay, aux_collapse_share=share)
    train(cfg)
    sched = cfg.schedule()
    assert calls  # 64 latents for 12 planted directions: some go quiet
    last = max(step for step, _ in calls)  # dead latents stay to the run's end, so AuxK reaches its last step
    assert last == sched.total_steps - 1 if through_decay else last < sched.lr_decay_start
    assert all(latents.numel() and int(latents.max()) < 64 for _, latents in calls)
    assert (max(collapsed) > 0) == (share > 0)  # this run has collapsed latents (up to 4 at a time)
    calls.clear()
    train(dataclasses.replace(cfg, out=str(tmp_path / "off"), aux_coefficient=0.0))
    assert not calls


@pytest.mark.parametrize("threshold_param", ["linear", "log"])
def test_dead_thresholds_drop_to_the_batch_max_pre_activation(threshold_param: str) -> None:
    sae, x = _sae(seed=3)
    if threshold_param == "linear":
        sae.use_linear_threshold()
    with torch.no_grad():  # θ well above every pre-activation for some latents, below it for others
        sae.threshold_parameter.copy_(torch.linspace(0.05, 6.0, sae.d_sae, dtype=torch.float64).log()
                                      if threshold_param == "log" else torch.linspace(0.05, 6.0, sae.d_sae))
        sae.b_enc[2] = -50.0  # latent 2: pre-activation < 0 on every token
    before = sae.threshold.detach().clone()
    dead = torch.tensor([0, 2, 5, 8, 11])
    top = dead_max_pre(sae, x, dead)
    with torch.no_grad():  # brute force: each token's pre-activation, one by one
        xn = x * sae.input_scale
        want_top = [max(float(xn[t] @ sae.W_enc[:, i] + sae.b_enc[i]) for t in range(x.shape[0]))
                    for i in dead.tolist()]
    torch.testing.assert_close(top, torch.tensor(want_top, dtype=torch.float64))
    lower_thresholds_(sae, dead, top)
    after = sae.threshold.detach()
    for j, i in enumerate(dead.tolist()):
        want = min(float(before[i]), want_top[j]) if want_top[j] > 0 else float(before[i])
        assert float(after[i]) == pytest.approx(want, rel=1e-12)
    live = [i for i in range(sae.d_sae) if i not in dead.tolist()]
    assert torch.equal(after[live], before[live])
    assert float(after[11]) < float(before[11])  # the high θ came down ...
    assert float(after[2]) == float(before[2])  # ... a latent that never reaches 0 keeps its θ
    lowered = dead[after[dead] < before[dead]]
    assert lowered.numel() >= 2
    with torch.no_grad():  # a lowered θ sits exactly at the top: on the edge of firing, not above it ...
        assert not (sae.pre_acts(x, lowered) > after[lowered]).any()
        # ... and the full encoder agrees to rounding (its matmul kernel may sum in another order: ±1 ulp)
        full = sae.pre_acts(x)[:, lowered]
        ulps = 16 * torch.finfo(full.dtype).eps * after[lowered].abs().max()
        assert (full.max(0).values - after[lowered]).abs().max() <= ulps


@pytest.mark.parametrize("through_decay", [True, False])
def test_the_trainer_lowers_only_dead_thresholds_and_only_while_auxk_runs(tmp_path, monkeypatch,
                                                                          through_decay: bool) -> None:
    x, _, planted = planted_activations(20_000, d_in=8, n_true=12, l0=2.0, seed=4)
    data = save_activation_file(tmp_path / "acts.safetensors", x)
    calls: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    real = trainer_module.lower_thresholds_

    def spy(sae, latents, top):
        frame = sys._getframe(1).f_locals  # the trainer loop's step and stats
        calls.append((frame["step"], latents.clone(), frame["stats"].since_fired.clone()))
        return real(sae, latents, top)

    monkeypatch.setattr(trainer_module, "lower_thresholds_", spy)
    cfg = TrainConfig(activations=str(data), out=str(tmp_path / "sae"), d_sae=64, target_l0=planted,
                      tokens=512 * 60, batch_size=512, progress=False, device="cpu", checkpoint_every=0,
                      aux_dead_window=1024, aux_through_decay=through_decay)
    train(cfg)
    last = max(step for step, _, _ in calls)
    assert last == cfg.schedule().total_steps - 1 if through_decay else last < cfg.schedule().lr_decay_start
    for _, latents, since_fired in calls:  # exactly the latents silent for the AuxK window
        assert torch.equal(latents, (since_fired >= 1024).nonzero().squeeze(1))
    calls.clear()
    train(dataclasses.replace(cfg, out=str(tmp_path / "off"), aux_threshold_reset=False))
    assert not calls


def test_auxk_options_are_validated() -> None:
    base = dict(activations="a", out="o", d_sae=8, tokens=4096, target_l0=2.0)
    assert TrainConfig(**base).aux_collapse_share == 0.0  # off by default: AuxK trains the dead latents only
    for key, value, flag in (("aux_coefficient", -1.0, "--aux-coefficient"), ("aux_k", 0, "--aux-k"),
                             ("aux_dead_window", 0, "--aux-dead-window"),
                             *(("aux_collapse_share", bad, r"--aux-collapse-share must be in \[0, 1\)")
                               for bad in (1.0, -0.1, float("nan")))):
        with pytest.raises(ValueError, match=flag):
            TrainConfig(**base, **{key: value})
