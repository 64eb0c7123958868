"""TrainConfig validation and the run-length dependent schedule, with the auto rules (app/training/auto.py)."""

from __future__ import annotations

import pytest

from app.training.auto import auto_bandwidth, auto_lr, auto_threshold_lr, default_batch_size
from app.training.config import TrainConfig
from app.training.schedule import L0Controller, lr_factor, warmed_lambda


def _cfg(**kw) -> TrainConfig:
    base = dict(activations="a.safetensors", d_sae=64, target_l0=8.0, tokens=4096 * 100, out="o")
    return TrainConfig(**(base | kw))


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(l0_coefficient=1.0), "exactly one of"),
        (dict(target_l0=64.0), "--target-l0"),
        (dict(target_l0=-1.0), "--target-l0"),
        (dict(d_sae=0), "--d-sae"),
        (dict(tokens=100), "--tokens"),
        (dict(lr=2.0), "--lr"),
        (dict(lr=0.0), "--lr"),
        (dict(bandwidth=0.0), "--bandwidth"),
        (dict(adam_beta2=1.0), "betas"),
        (dict(lr_decay_fraction=1.5), "--lr-decay-fraction"),
        (dict(holdout_every=1), "--holdout-every"),
        (dict(holdout_every=-3), "--holdout-every"),
        (dict(model="m", corpus="c", layer=0), "not both"),
        (dict(activations=None, model="m"), "--corpus"),
        (dict(activations=None, model="m", corpus="c"), "--layer"),
        (dict(activations=None, model="m", corpus="c", layer=0, hook="resid_mid"), "unknown --hook"),
        (dict(out=""), "--out"),
        (dict(batch_size=-4), "--batch-size"),
    ],
)
def test_bad_values_are_rejected_on_construction(kw, message) -> None:
    with pytest.raises(ValueError, match=message):
        _cfg(**kw)


def test_no_sparsity_flag_means_the_default_target_l0() -> None:
    assert _cfg(target_l0=None).target_l0 == 8.0  # min(32, 64 / 8)
    assert _cfg(target_l0=None, d_sae=16384).target_l0 == 32.0
    assert _cfg(target_l0=None, l0_coefficient=0.5).target_l0 is None  # λ given: no target


def test_long_runs_use_the_paper_recipe() -> None:
    s = _cfg(tokens=4096 * 1_000_000).schedule()  # the paper's scale: 4.1B tokens
    assert s.total_steps == 1_000_000
    assert s.lr == 7e-5 and s.bandwidth == 0.001
    assert s.threshold_lr == pytest.approx(10 / 2048)  # θ's LR: no lower than a 2048-step run's (eleventh pass)
    assert s.lr_warmup == 1000 and s.l0_warmup == 10_000
    assert s.lr_decay_start == 800_000
    assert s.adam_beta2 == 0.999


@pytest.mark.parametrize(("steps", "lr"), [
    (100, 1e-2),                    # 3 / 100 = 0.03, capped
    (300, 1e-2),                    # 3 / 300 = 0.01, the cap itself
    (1024, 3 / 1024),               # the planted benchmark's runs: unchanged
    (2048, 3 / 2048),               # every auto-batch run under 8.4M tokens: unchanged
    (4096, 3 / 2896.309375740099),  # √(2048 · 4096) = 2048 · √2
    (5120, 3 / 3238.1723240124),    # √(2048 · 5120) = 1024 · √10
    (200_000, 3 / 20238.577024),    # √(2048 · 200,000) = √409,600,000
    (1_000_000, 7e-5),              # 3 / 45,254.8 = 6.6e-5, below the floor
])
def test_auto_lr_bends_to_one_over_root_steps_past_2048(steps: int, lr: float) -> None:
    s = _cfg(tokens=4096 * steps, batch_size=4096).schedule()
    assert s.total_steps == steps
    assert s.lr == pytest.approx(lr, rel=1e-5)


def test_auto_lr_is_continuous_and_never_rises() -> None:
    steps = list(range(1, 5000)) + [10_000, 100_000, 896_000, 897_000, 2_000_000]
    lrs = [auto_lr(n) for n in steps]
    assert all(b <= a for a, b in zip(lrs, lrs[1:]))
    assert auto_lr(2049) == pytest.approx(auto_lr(2048), rel=1e-3)  # no jump at the bend
    assert auto_lr(896_000) > 7e-5 and auto_lr(897_000) == 7e-5  # (3 / 7e-5)² / 2048 = 896,843


@pytest.mark.parametrize(("steps", "lr", "theta"), [
    (50, 1e-2, 0.1),                 # 10 / 50 = 0.2, capped at 0.1
    (300, 1e-2, 10 / 300),           # above the weights' LR
    (1024, 3 / 1024, 10 / 1024),     # the planted benchmark's runs: unchanged
    (2048, 3 / 2048, 10 / 2048),     # the bend
    (5120, 3 / 3238.1723240124, 10 / 2048),  # past it θ's LR holds (was 10 / 5120)
    (1_000_000, 7e-5, 10 / 2048),
])
def test_auto_threshold_lr_holds_from_2048_steps_on(steps: int, lr: float, theta: float) -> None:
    s = _cfg(tokens=4096 * steps, batch_size=4096).schedule()
    assert s.lr == pytest.approx(lr, rel=1e-5)
    assert s.threshold_lr == pytest.approx(theta, rel=1e-9)
    assert auto_threshold_lr(steps, 0.5) == 0.5  # never below the weights' LR
    explicit = _cfg(tokens=4096 * steps, batch_size=4096, threshold_lr=3e-4).schedule()
    assert explicit.threshold_lr == 3e-4


def test_auto_threshold_lr_never_rises_with_the_run_length() -> None:
    thetas = [auto_threshold_lr(n, auto_lr(n)) for n in range(1, 6000)]
    assert all(b <= a for a, b in zip(thetas, thetas[1:]))
    assert thetas[2047] == thetas[-1] == pytest.approx(10 / 2048)


def test_short_runs_scale_warmups_and_learning_rates() -> None:
    s = _cfg(tokens=4096 * 300, batch_size=4096).schedule()
    assert s.total_steps == 300
    assert s.lr_warmup == 15 and s.l0_warmup == 60  # 5 % and 20 % of the run
    assert s.lr == pytest.approx(0.01) and s.threshold_lr == pytest.approx(10 / 300)
    assert s.bandwidth == pytest.approx(0.02)
    assert _cfg(tokens=4096 * 300, batch_size=4096, lr=1e-3).schedule().lr == 1e-3


@pytest.mark.parametrize(("steps", "want"), [(1, 0.02), (300, 0.02), (600, 0.01), (2048, 6 / 2048), (6000, 0.001),
                                             (1_000_000, 0.001)])
def test_auto_bandwidth_widens_the_window_of_short_runs(steps: int, want: float) -> None:
    # worked by hand: ε = 6 / steps within [0.001 (SPEC §2, from 6k steps on), 0.02]
    assert auto_bandwidth(steps) == pytest.approx(want)
    assert _cfg(tokens=4096 * steps, batch_size=4096).schedule().bandwidth == pytest.approx(want)


@pytest.mark.parametrize("steps", [1, 300, 2000, 2048, 5000, 20_000, 200_000])
def test_auto_adam_beta2_averages_over_a_twentieth_of_the_run(steps: int) -> None:
    # Brute force: Adam's second moment averages over ~1 / (1 − β2) steps; the rule makes that window a
    # twentieth of the run, kept between 100 steps (β2 0.99) and SPEC's 1,000 (β2 0.999).
    window = min(1000.0, max(100.0, steps / 20))
    s = _cfg(tokens=256 * steps, batch_size=256).schedule()
    assert s.total_steps == steps
    assert 1 / (1 - s.adam_beta2) == pytest.approx(window)
    assert _cfg(tokens=256 * steps, batch_size=256, adam_beta2=0.95).schedule().adam_beta2 == 0.95  # explicit kept


def test_lr_factor_warms_up_then_decays_to_zero() -> None:
    s = _cfg(tokens=4096 * 100, batch_size=4096).schedule()
    factors = [lr_factor(i, s) for i in range(100)]
    assert factors[0] == pytest.approx(1 / s.lr_warmup) and max(factors) == 1.0
    assert factors[-1] == pytest.approx(1 / 20) and all(a >= b for a, b in zip(factors[80:], factors[81:]))
    assert warmed_lambda(0, 2.0, 10) == pytest.approx(0.2) and warmed_lambda(50, 2.0, 10) == 2.0


def test_controller_raises_lambda_above_target_and_lowers_it_below() -> None:
    c = L0Controller(target=10.0, warmup=0, rate=0.1)
    lam0 = c.lam
    c.update(0, 100.0)
    assert c.lam > lam0
    lam1 = c.lam
    c.update(1, 1.0)
    assert c.lam < lam1
    ramp = L0Controller(target=10.0, warmup=100, rate=0.1)
    ramp.update(0, 1000.0)
    assert 10.0 < ramp.target_at(50) < 1000.0 and ramp.target_at(99) == 10.0


def test_json_round_trip(tmp_path) -> None:
    cfg = _cfg(out=str(tmp_path / "o"), lr=1e-3)
    cfg.save(tmp_path)
    back = TrainConfig.load(tmp_path)
    assert back == cfg


@pytest.mark.parametrize("tokens", [4096, 300_000, 524_288, 1_048_576, 1_228_800, 3_000_000, 8_388_607, 8_388_608,
                                    10**9])
def test_auto_batch_size_is_the_largest_power_of_two_that_keeps_2048_steps(tokens: int) -> None:
    # Brute force over the allowed sizes: the largest with ≥ 2048 steps, else the smallest.
    allowed = [256, 512, 1024, 2048, 4096]
    want = max([b for b in allowed if tokens // b >= 2048], default=256)
    assert default_batch_size(tokens) == want
    cfg = _cfg(tokens=tokens)
    assert cfg.batch_size == want and cfg.schedule().total_steps == tokens // want
    assert _cfg(tokens=tokens, batch_size=4096).batch_size == 4096  # an explicit size is kept


def test_auto_batch_size_spans_spec_batch_to_short_runs() -> None:
    assert default_batch_size(10**9) == 4096  # SPEC §2's batch for long runs
    assert _cfg(tokens=1_048_576).schedule().total_steps == 2048  # 1M tokens: 512 per step
    with pytest.raises(ValueError, match="at least one batch"):
        _cfg(tokens=100)

