"""The quadratic objective's target correction (app/training/schedule.py `TargetCorrection`, --l0-correction) and
its L0 reward (--l0-reward): updates against the rules written out step by step, bounds, and runs whose L0 they
bring to the target (measured on held-out tokens of a planted dictionary)."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch

from app.sae import load_sae
from app.training.activations import save_activation_file
from app.training.auto import auto_l0_correction
from app.training.checkpoint import list_checkpoints
from app.training.config import CONFIG_FILE, TrainConfig
from app.training.schedule import TargetCorrection
from app.training.trainer import train
from benchmarks.synthetic_data import SETTINGS, PlantedDictionary
from tests.training.planted import planted_activations


def _window_error(l0: float, target: float, step: int, start: int, outside: int) -> tuple[float | None, int]:
    """(the error e the correction acts on at this step, or None when it waits; the new count of steps in a row
    outside the window), from the rule as docs/training.md states it: from step `start` on, e = log(L0/T) while
    L0 is within e^±0.25 of T; once L0 has been outside for more than max(start, 128) steps in a row, e = ±0.25."""
    if step < start:
        return None, outside
    e = math.log(l0 / target)
    if abs(e) <= 0.25:
        return e, 0
    if outside + 1 <= max(start, 128):
        return None, outside + 1
    return math.copysign(0.25, e), outside + 1


def _reference(target: float, start: int, rate: float, l0s: list[float]) -> float:
    """T_pen after the batch L0s `l0s`: T_pen ← T_pen·e^(−rate·e), kept in [T/2, T]."""
    t_pen, outside = target, 0
    for step, l0 in enumerate(l0s):
        e, outside = _window_error(l0, target, step, start, outside)
        if e is not None:
            t_pen = min(target, max(target / 2, t_pen * math.exp(-rate * e)))
    return t_pen


@pytest.mark.parametrize("l0s", [[40.0] * 30, [26.0] * 30, [32.0, 90.0, 10.0, 33.0, 31.0, 40.0] * 8,
                                 [1e-9] * 5 + [500.0] * 100, [1e-9] * 5 + [500.0] * 400, [40.0] * 3000,
                                 [26.0] * 3000, ([90.0] * 120 + [33.0]) * 4, [43.0] * 600 + [10.0] * 600])
def test_update_follows_the_rule(l0s: list[float]) -> None:
    c = TargetCorrection(target=32.0, start=3, rate=0.01)
    for step, l0 in enumerate(l0s):
        c.update(step, l0)
    assert c.penalty_target == pytest.approx(_reference(32.0, 3, 0.01, l0s), rel=1e-9)
    assert 16.0 - 1e-9 <= c.penalty_target <= 32.0 + 1e-9
    if l0s[-1] == 500.0:  # far from the target for fewer than 128 steps in a row: no wind-up
        assert (c.penalty_target == 32.0) == (len(l0s) < 200)  # for longer it has stalled there, and it moves
    if l0s[-1] == 33.0:  # excursions of 120 steps never stall: only the four steps at 33 moved T_pen
        assert c.penalty_target == pytest.approx(32.0 * (32.0 / 33.0) ** (4 * 0.01), rel=1e-12)


@pytest.mark.parametrize("side", ["both", "over"])
@pytest.mark.parametrize("start", [0, 1024])
def test_an_l0_whose_balance_lies_outside_the_window_is_brought_to_the_target(side, start, caplog) -> None:
    """A closed loop: the penalty's balance lies 32 % above whatever T_pen is (planted s4c at d = 256, seed 1, sat
    at 10.6 for 8 from the warm-up to the end): L0 settles on T, where the window alone left it at 1.32·T."""
    c = TargetCorrection(target=8.0, start=start, rate=0.01, side=side)
    l0s = []
    with caplog.at_level(logging.INFO, logger="app.training.schedule"):
        for step in range(start + 4096):
            l0s.append(1.32 * c.penalty_target)
            c.update(step, l0s[-1])
    assert sum("outside e^±0.25 of its target 8.00" in r.message for r in caplog.records) == 1
    assert l0s[start + max(start, 128) - 1] == pytest.approx(1.32 * 8.0)  # patience: untouched while it may close
    assert l0s[-1] == pytest.approx(8.0, rel=0.01)
    assert c.penalty_target == pytest.approx(8.0 / 1.32, rel=0.01)


def test_direction_warmup_and_state_round_trip() -> None:
    c = TargetCorrection(target=10.0, start=5, rate=0.1)
    for step in range(5):
        c.update(step, 12.0)
    assert c.penalty_target == 10.0  # nothing moves during the L0 warm-up
    c.update(5, 12.0)
    assert c.penalty_target < 10.0  # L0 above the target: the penalty pulls toward less
    back = TargetCorrection(target=10.0, start=5, rate=0.1)
    back.load_state_dict(json.loads(json.dumps(c.state_dict())))
    assert back.penalty_target == c.penalty_target
    c.update(6, 8.5)
    c.update(7, 8.5)
    assert c.penalty_target > back.penalty_target  # below the target: back toward it ...
    for step in range(8, 400):
        c.update(step, 8.5)
    assert c.penalty_target == 10.0  # ... but never above it (the penalty's bias is upward only)


def test_the_steps_outside_the_window_are_part_of_the_state() -> None:
    c = TargetCorrection(target=10.0, start=0, rate=0.01)
    for step in range(100):
        c.update(step, 20.0)
    back = TargetCorrection(target=10.0, start=0, rate=0.01)
    back.load_state_dict(json.loads(json.dumps(c.state_dict())))
    for step in range(100, 200):
        c.update(step, 20.0)
        back.update(step, 20.0)
    assert back.penalty_target == c.penalty_target < 10.0  # stalled after 128 steps, counted across the resume
    legacy = TargetCorrection(target=10.0, start=0, rate=0.01)
    legacy.load_state_dict({"log_ratio": 0.0, "error": 0.0})  # a checkpoint from before the count: none yet
    assert legacy.outside == 0


def _reference_over(target: float, start: int, rate: float, l0s: list[float]) -> float:
    """T_pen for the one-sided penalty, from docs/training.md's rule: I and ē move when the correction acts
    (`_window_error`), I ← clamp(I − rate·e), ē ← 0.9·ē + 0.1·e, T_pen = T·exp(clamp(I − 2·ē)) in [T/2, 2T]."""
    integral, smoothed, outside = 0.0, 0.0, 0
    for step, l0 in enumerate(l0s):
        e, outside = _window_error(l0, target, step, start, outside)
        if e is not None:
            integral = min(math.log(2), max(math.log(0.5), integral - rate * e))
            smoothed = 0.9 * smoothed + 0.1 * e
    return target * math.exp(min(math.log(2), max(math.log(0.5), integral - 2 * smoothed)))


@pytest.mark.parametrize("l0s", [[40.0] * 30, [26.0] * 30, [32.0, 90.0, 10.0, 33.0, 31.0, 40.0] * 8,
                                 [26.0] * 300 + [36.0] * 40, [40.0] * 3000, [26.0] * 3000, [20.0] * 500,
                                 [60.0] * 300 + [31.0] * 50])
def test_one_sided_update_follows_the_rule_with_its_proportional_term(l0s: list[float]) -> None:
    c = TargetCorrection(target=32.0, start=3, rate=0.01, side="over")
    for step, l0 in enumerate(l0s):
        c.update(step, l0)
    assert c.penalty_target == pytest.approx(_reference_over(32.0, 3, 0.01, l0s), rel=1e-9)
    back = TargetCorrection(target=32.0, start=3, rate=0.01, side="over")
    back.load_state_dict(json.loads(json.dumps(c.state_dict())))
    assert back.penalty_target == c.penalty_target  # the smoothed error is part of the state


def test_the_proportional_term_answers_before_the_integral_does() -> None:
    over = TargetCorrection(target=10.0, start=0, rate=0.002, side="over")
    both = TargetCorrection(target=10.0, start=0, rate=0.002, side="both")
    for step in range(10):
        over.update(step, 12.0)
        both.update(step, 12.0)
    # after ten steps 20 % over T: the integral alone has moved T_pen by ~0.4 %, the proportional term by ~12 %
    assert 9.9 < both.penalty_target < 10.0
    assert over.penalty_target < 9.0


def test_with_the_one_sided_penalty_the_target_may_rise_up_to_twice_t() -> None:
    c = TargetCorrection(target=10.0, start=0, rate=0.1, side="over")
    for step in range(2000):
        c.update(step, 8.5)  # below the target, inside the window
    assert c.penalty_target == pytest.approx(20.0)  # raised, and held at its bound 2T
    for step in range(2000, 4000):
        c.update(step, 11.5)
    assert c.penalty_target == pytest.approx(5.0)  # lowered to T/2 as before
    with pytest.raises(KeyError):
        TargetCorrection(target=10.0, start=0, rate=0.1, side="under")


def test_the_correction_brings_the_quadratic_runs_l0_to_its_target(tmp_path) -> None:
    x, _, planted = planted_activations(16_384, d_in=32, n_true=64, l0=6.0, seed=3)
    data = save_activation_file(tmp_path / "acts.safetensors", x)
    target = 3.0  # well below the planted L0: the reconstruction pulls hard toward more active latents

    def run(name: str, rate: float) -> tuple[float, list[dict]]:
        out = train(TrainConfig(activations=str(data), out=str(tmp_path / name), d_sae=64, target_l0=target,
                                tokens=16_384 * 5, batch_size=256, progress=False, seed=0, log_every=32,
                                l0_correction=rate, checkpoint_every=0))
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        tail = rows[len(rows) // 2:]  # after the warm-up, through the LR decay
        return sum(r["l0"] for r in tail) / len(tail), rows

    off, rows_off = run("off", 0.0)
    on, rows_on = run("on", 0.02)
    assert off > 1.05 * target  # the plain quadratic settles above its target ...
    assert abs(on - target) < 0.5 * abs(off - target)  # ... the correction halves the gap at least
    assert all(r["penalty_target"] is None for r in rows_off)
    assert rows_on[-1]["penalty_target"] < target  # it got there by pulling toward fewer


def _reference_reward(target: float, start: int, rate: float, l0s: list[float]) -> float:
    """The L0 reward from docs/training.md's rule: from step `start` on, at any distance from T,
    r ← min(0, r + rate·log(L0 / T))."""
    r = 0.0
    for step, l0 in enumerate(l0s):
        if step >= start:
            r = min(0.0, r + rate * math.log(l0 / target))
    return r


@pytest.mark.parametrize("l0s", [[6.0] * 50, [14.0] * 50, [2.0] * 20 + [12.0] * 5 + [9.0] * 30,
                                 [10.0, 5.0, 20.0, 9.0] * 25])
def test_the_l0_reward_follows_its_rule(l0s: list[float]) -> None:
    c = TargetCorrection(target=10.0, start=4, rate=0.002, side="over", reward_rate=0.05)
    for step, l0 in enumerate(l0s):
        c.update(step, l0)
    assert c.reward == pytest.approx(_reference_reward(10.0, 4, 0.05, l0s), rel=1e-12, abs=1e-15)
    assert c.reward <= 0.0  # it only ever pays for firing
    back = TargetCorrection(target=10.0, start=4, rate=0.002, side="over", reward_rate=0.05)
    back.load_state_dict(json.loads(json.dumps(c.state_dict())))
    assert back.reward == c.reward
    if l0s[0] == 2.0:
        assert c.reward < -0.5  # L0 far under T (outside the correction's window): the reward still grows


def test_the_l0_reward_is_idle_in_the_warmup_and_off_by_default() -> None:
    c = TargetCorrection(target=10.0, start=5, rate=0.002, side="over", reward_rate=0.05)
    for step in range(5):
        c.update(step, 4.0)
    assert c.reward == 0.0
    plain = TargetCorrection(target=10.0, start=0, rate=0.002, side="over")
    for step in range(100):
        plain.update(step, 4.0)
    assert plain.reward == 0.0
    old = TargetCorrection(target=10.0, start=0, rate=0.002)
    old.load_state_dict({"log_ratio": 0.1, "error": 0.0})  # a checkpoint from before the reward
    assert old.reward == 0.0


def test_the_l0_reward_lifts_an_l0_the_frequency_penalty_pushed_under_the_target(tmp_path) -> None:
    # the benchmark's s4c: 256 correlated directions in 64 dims, L0 ≈ 8. The frequency penalty taxes firing; moving
    # T_pen cannot push L0 up (the one-sided penalty is 0 below it).
    cfg = SETTINGS["s4c"]
    truth = PlantedDictionary(cfg, seed=0)
    x, fire = truth.sample(262_144, seed=10)
    held, _ = truth.sample(32_768, seed=20)
    planted = float(fire.count_nonzero()) / fire.shape[0]
    data = save_activation_file(tmp_path / "acts.safetensors", x)

    def held_out_l0(reward: float | None) -> tuple[float, TrainConfig]:
        config = TrainConfig(activations=str(data), out=str(tmp_path / f"r{reward}"), d_sae=cfg.n_dirs,
                             target_l0=planted, tokens=1024 * 1024, batch_size=1024, progress=False, seed=0,
                             frequency_coefficient=0.003, l0_reward=reward, checkpoint_every=0)
        sae = load_sae(train(config))
        with torch.no_grad():
            return float((sae.encode(held) > 0).sum(1).double().mean()), config

    off, _ = held_out_l0(0.0)
    on, config = held_out_l0(None)
    assert config.l0_reward == 0.05  # auto: on with the frequency penalty
    assert off < 0.95 * planted, (off, planted)  # measured 7.38 for 8.01
    assert abs(on - planted) < 0.025 * planted, (on, planted)  # measured 7.97


def test_auto_l0_reward_and_its_validation() -> None:
    base = {"activations": "a.safetensors", "out": "o", "d_sae": 8, "tokens": 4096}
    assert TrainConfig(**base).l0_reward == 0.0
    assert TrainConfig(**base, frequency_coefficient=0.003).l0_reward == 0.05
    assert TrainConfig(**base, frequency_coefficient=0.003, l0_reward=0.0).l0_reward == 0.0
    assert TrainConfig(**base, l0_reward=0.1).l0_reward == 0.1
    for bad in (-0.1, 2.0, float("nan")):
        with pytest.raises(ValueError, match="--l0-reward must be in"):
            TrainConfig(**base, l0_reward=bad)


def _short_run(data, out, **kw) -> tuple[dict, list[dict]]:
    """A 40-step quadratic run on `data`: its final weights (none when paused) and its metrics rows."""
    base = dict(activations=str(data), d_sae=16, target_l0=3.0, tokens=64 * 40, batch_size=64, buffer_tokens=1000,
                checkpoint_every=4, log_every=1, out=str(out), progress=False, seed=2, lr_warmup_steps=4)
    train(TrainConfig(**(base | kw)))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return ({} if kw.get("stop_at_step") else dict(load_sae(out).state_dict())), rows


@pytest.mark.parametrize(("d_in", "rate"), [(8, 0.002), (64, 0.002), (160, 0.006), (512, 0.01)])
def test_the_auto_rate_is_the_named_rate_for_the_run(tmp_path, d_in, rate) -> None:
    """Auto trains bit for bit as the rate named: 0.002 up to d_in 64, 0.01 from 256, linear between (written out
    here per width), and names it in train_config.json. Where the correction acts, a run at 0.002 moves T_pen
    differently."""
    x = torch.randn(700, d_in, generator=torch.Generator().manual_seed(d_in))
    data = save_activation_file(tmp_path / "x.safetensors", x)
    auto, rows = _short_run(data, tmp_path / "auto")
    assert json.loads((tmp_path / "auto" / CONFIG_FILE).read_text())["l0_correction"] == rate
    named, named_rows = _short_run(data, tmp_path / "named", l0_correction=rate)
    assert all(torch.equal(auto[k], named[k]) for k in auto)
    assert [r["penalty_target"] for r in rows] == [r["penalty_target"] for r in named_rows]
    if rate != 0.002:
        _, slow = _short_run(data, tmp_path / "slow", l0_correction=0.002)
        moved = [r["penalty_target"] for r in rows if r["penalty_target"] != 3.0]
        assert moved and [r["penalty_target"] for r in slow] != [r["penalty_target"] for r in rows]


def test_the_auto_rate_is_flat_outside_the_widths_measured() -> None:
    """0.002 up to d_in 64, 0.01 from d_in 256 (the widths measured; docs/training.md, twenty-seventh pass), a
    straight line between."""
    assert [auto_l0_correction(d) for d in (1, 32, 64, 112, 208, 256, 576, 2304, 10**6)] == pytest.approx(
        [0.002, 0.002, 0.002, 0.004, 0.008, 0.01, 0.01, 0.01, 0.01], rel=1e-12)


@pytest.mark.parametrize(("saved", "rate"), [(None, 0.0), (0.002, 0.002)])
def test_a_run_resumes_with_its_rate(tmp_path, saved, rate) -> None:
    """A run from before the auto rule, resumed with the auto default at d_in 512 (which alone would give 0.01),
    keeps its rate bit for bit: 0.002 as its config names it, 0 when the config has no l0_correction (written before
    the correction existed)."""
    x = torch.randn(700, 512, generator=torch.Generator().manual_seed(5))
    data = save_activation_file(tmp_path / "x.safetensors", x)
    straight, _ = _short_run(data, tmp_path / "straight", l0_correction=rate)
    _short_run(data, tmp_path / "paused", l0_correction=rate, stop_at_step=13)
    for ckpt in list_checkpoints(tmp_path / "paused"):  # as an older release wrote it
        config = json.loads((ckpt / CONFIG_FILE).read_text())
        if saved is None:
            del config["l0_correction"]
        (ckpt / CONFIG_FILE).write_text(json.dumps(config))
    resumed, _ = _short_run(data, tmp_path / "paused", resume=True)
    assert json.loads((tmp_path / "paused" / CONFIG_FILE).read_text())["l0_correction"] == rate
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    auto, _ = _short_run(data, tmp_path / "auto")  # the rate the rule alone gives here trains another run
    assert not all(torch.equal(straight[k], auto[k]) for k in straight)
