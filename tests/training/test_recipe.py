"""The default training recipe (docs/training.md): quadratic objective, linear θ, free decoder, per-group LRs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from app.sae import load_sae
from app.training import TrainConfig, train
from app.training.activations import save_activation_file
from app.training.schedule import group_lrs, quadratic_coefficient
from tests.training.planted import planted_activations


def _cfg(**kw) -> TrainConfig:
    base = dict(activations="a.safetensors", out="o", d_sae=64, target_l0=4.0, tokens=4096 * 100)
    return TrainConfig(**(base | kw))


def test_defaults_pick_the_benchmarked_recipe() -> None:
    c = _cfg()
    assert (c.objective, c.threshold_param, c.decoder, c.adam_beta1) == ("quadratic", "linear", "free", 0.9)
    assert _cfg(target_l0=None, l0_coefficient=1e-3).objective == "step"  # a fixed λ keeps the L0 penalty
    assert _cfg(objective="tanh").objective == "tanh"
    for bad, match in ((dict(threshold_param="sqrt"), "threshold-param"), (dict(decoder="tied"), "decoder"),
                       (dict(decoder_init_norm=0.0), "decoder-init-norm")):
        with pytest.raises(ValueError, match=match):
            _cfg(**bad)


@pytest.mark.parametrize("d_in", [16, 576, 2304])
def test_group_lrs_scale_activation_unit_parameters(d_in: int) -> None:
    c = _cfg(threshold_step="per_latent")  # torch Adam's θ: the ÷√d_in rule alone
    sched = c.schedule()
    lrs = group_lrs(c, sched, d_in)
    assert lrs.weights == sched.lr
    assert lrs.biases == pytest.approx(sched.lr / math.sqrt(d_in), rel=1e-12)
    assert lrs.threshold == pytest.approx(sched.threshold_lr / math.sqrt(d_in), rel=1e-12)
    assert sched.threshold_lr == max(sched.lr, 10 / sched.total_steps)  # 100 steps: the short-run rule
    assert group_lrs(_cfg(threshold_lr=0.02), sched, d_in).threshold == 0.02
    log = _cfg(threshold_param="log")
    assert tuple(group_lrs(log, log.schedule(), d_in)) == (sched.lr, sched.lr, log.schedule().threshold_lr)
    assert quadratic_coefficient(c, d_in) == pytest.approx(1.0 / d_in)
    assert quadratic_coefficient(_cfg(quadratic_coefficient=0.3), d_in) == 0.3


# (d_in, batch, factor) worked by hand from (d_in / 64)·√(batch / 4096) within [1, 4]
@pytest.mark.parametrize(("d_in", "batch", "factor"), [
    (16, 4096, 1.0),  # 0.25 → the floor: small widths keep the ÷√d_in rule
    (64, 4096, 1.0),  # the calibration point
    (256, 4096, 4.0),  # planted s2 at d = 256
    (576, 256, 2.25),  # SmolLM2 at 0.5M tokens: 9 · 1/4
    (576, 512, 9.0 / math.sqrt(8.0)),  # SmolLM2 at 1M tokens: 3.18
    (2304, 4096, 4.0),  # 36 → the cap
    (256, 256, 1.0),  # 4 · 1/4
])
def test_shared_threshold_step_scales_theta_lr_with_width_and_batch(d_in: int, batch: int, factor: float) -> None:
    c = _cfg(batch_size=batch, tokens=batch * 100)
    assert c.threshold_step == "shared"  # the default
    sched = c.schedule()
    lrs = group_lrs(c, sched, d_in)
    assert lrs.threshold == pytest.approx(sched.threshold_lr / math.sqrt(d_in) * factor, rel=1e-12)
    assert lrs.biases == pytest.approx(sched.lr / math.sqrt(d_in), rel=1e-12)  # only θ's LR moves
    assert group_lrs(_cfg(batch_size=batch, tokens=batch * 100, threshold_lr=0.02), sched, d_in).threshold == 0.02
    with pytest.raises(ValueError, match="threshold-step"):
        _cfg(threshold_step="global")


def test_theta_boost_is_off_by_default_and_validated() -> None:
    assert _cfg().threshold_boost == 1.0 and _cfg().threshold_boost_fraction == 0.1
    assert _cfg(tokens=4096 * 1000, batch_size=4096).schedule().threshold_boost_end == 100
    assert _cfg(tokens=4096 * 1001, batch_size=4096).schedule().threshold_boost_end == 101  # 100.1 steps, rounded up
    for bad, match in ((dict(threshold_boost=0.0), "threshold-boost must"), (dict(threshold_boost=math.nan), "boost"),
                       (dict(threshold_boost_fraction=1.5), "threshold-boost-fraction")):
        with pytest.raises(ValueError, match=match):
            _cfg(**bad)


@pytest.mark.parametrize(("boost", "fraction", "boosted_steps"), [(3.2, 0.25, 10), (1.0, 0.25, 0), (5.0, 0.0, 0)])
def test_theta_lr_boost_covers_the_first_fraction_of_the_run(tmp_path, monkeypatch, boost, fraction,
                                                              boosted_steps) -> None:
    """Spied at every optimiser step: θ's group runs at boost × its scheduled LR over the first `fraction` of the
    40 steps (worked by hand: 10 steps at a quarter) and at the scheduled LR after; the other groups never move."""
    from app.training.optim import ThresholdAdam

    seen: list[list[float]] = []
    real_step = ThresholdAdam.step

    def spy(self, closure=None):  # noqa: ANN001, ANN202
        seen.append([g["lr"] for g in self.param_groups])
        return real_step(self, closure)

    monkeypatch.setattr(ThresholdAdam, "step", spy)
    x, _, planted = planted_activations(8_000, d_in=16, n_true=32, l0=3.0, seed=7)
    data = save_activation_file(tmp_path / "acts.safetensors", x)
    cfg = TrainConfig(activations=str(data), out=str(tmp_path / "sae"), d_sae=32, target_l0=planted, tokens=1024 * 40,
                      batch_size=1024, progress=False, device="cpu", checkpoint_every=0, log_every=1,
                      threshold_boost=boost, threshold_boost_fraction=fraction)
    out = train(cfg)
    assert len(seen) == 40
    peaks = group_lrs(cfg, cfg.schedule(), 16)
    for step, (weights, biases, theta) in enumerate(seen):
        f = weights / peaks.weights  # the warm-up / decay factor of this step, shared by every group
        assert biases == pytest.approx(peaks.biases * f, rel=1e-12)
        assert theta == pytest.approx(peaks.threshold * f * (boost if step < boosted_steps else 1.0), rel=1e-12)
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["threshold_lr"] for r in logged] == pytest.approx([lrs[2] for lrs in seen], rel=1e-12)


def test_default_run_saves_unit_rows_and_logs_the_group_lrs(tmp_path) -> None:
    """A free-decoder run folds its row norms at save: every saved row has the same norm, 1/input scale (unit in
    normalised units, as the unit-decoder recipe saves), and the SAE reconstructs."""
    x, _, planted = planted_activations(20_000, d_in=16, n_true=32, l0=3.0, seed=5)
    data = save_activation_file(tmp_path / "acts.safetensors", x)
    out = train(TrainConfig(activations=str(data), out=str(tmp_path / "sae"), d_sae=32, target_l0=planted,
                            tokens=1024 * 40, batch_size=1024, progress=False, device="cpu", checkpoint_every=0,
                            lr_warmup_steps=0, lr_decay_fraction=0.0))
    saved = json.loads((out / "train_config.json").read_text())
    assert (saved["objective"], saved["threshold_param"], saved["decoder"]) == ("quadratic", "linear", "free")
    sae = load_sae(out)
    norms = torch.linalg.vector_norm(sae.W_dec.detach(), dim=1)
    # the normalisation sample: E‖s·(x − μ)‖² = 1 about its mean μ (--center auto: its mean holds 15 % of the energy)
    xs = x[:20_000].double()
    scale = float((xs - xs.mean(0)).pow(2).sum(1).mean().rsqrt())
    assert torch.allclose(norms, torch.full_like(norms, 1.0 / scale), rtol=1e-3)
    last = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    sched = TrainConfig.load(out).schedule()
    assert last["threshold_lr"] == pytest.approx(sched.threshold_lr / 4.0 * last["lr"] / sched.lr, rel=1e-9)  # √16
    assert last["lambda"] == pytest.approx(1.0 / 16)
    with torch.no_grad():
        fvu = float((x - sae.decode(sae.encode(x))).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    assert fvu < 0.6


def test_gemma_scope_1_recipe_keeps_unit_rows_every_step(tmp_path) -> None:
    """--threshold-param log --decoder unit --objective step: rows stay unit norm throughout (checkpoint)."""
    from app.training.checkpoint import latest_checkpoint, load_checkpoint

    x, _, planted = planted_activations(8_000, d_in=12, n_true=24, l0=3.0, seed=6)
    data = save_activation_file(tmp_path / "acts.safetensors", x)
    out = train(TrainConfig(activations=str(data), out=str(tmp_path / "sae"), d_sae=24, target_l0=planted,
                            tokens=1024 * 8, batch_size=1024, progress=False, device="cpu", checkpoint_every=4,
                            threshold_param="log", decoder="unit", objective="step", keep_checkpoints=2))
    tensors, state = load_checkpoint(latest_checkpoint(out))
    # 8 steps: the auto β2 of a short run (0.99), as the schedule says, reaches Adam
    betas = {tuple(g["betas"]) for g in state["optimizer"]["param_groups"]}
    assert betas == {(0.9, TrainConfig.load(out).schedule().adam_beta2)} == {(0.9, 0.99)}
    assert "sae.log_threshold" in tensors and "sae.linear_threshold" not in tensors
    norms = torch.linalg.vector_norm(tensors["sae.W_dec"], dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
