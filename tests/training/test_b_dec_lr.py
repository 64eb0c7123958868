"""--b-dec-lr-factor: b_dec steps at the biases' LR times the factor, every other parameter as without it, and a
run resumes with the factor it began with. The reference is Adam's first step, which moves each element by its LR
times a quantity that does not depend on the LR: after one step from the same start, b_dec's move must scale with
the factor and nothing else may move differently. The auto factor (64/d_in within [0.25, 1] on centred runs whose
encoder reads x − b_dec, else 1) is checked the same way, against runs that name the factor."""

from __future__ import annotations

import json

import pytest
import torch

from app.training.activations import save_activation_file
from app.training.checkpoint import list_checkpoints, load_checkpoint
from app.training.config import CONFIG_FILE, TrainConfig
from app.training.resume import check_output
from app.training.trainer import train

OTHERS = ("sae.W_enc", "sae.W_dec", "sae.b_enc")


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(activations=str(data), d_sae=16, target_l0=3.0, tokens=64 * 40, batch_size=64, buffer_tokens=1000,
                checkpoint_every=4, log_every=5, out=str(out), progress=False, seed=2, center=False,
                apply_b_dec_to_input=True, lr_warmup_steps=4)
    return TrainConfig(**(base | kw))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bdec_lr")
    x = torch.randn(700, 8, generator=torch.Generator().manual_seed(3)) + torch.linspace(-2.0, 2.0, 8)
    return save_activation_file(tmp / "x.safetensors", x), tmp


def _after(data, tmp, name: str, steps: int, **kw) -> dict[str, torch.Tensor]:
    out = train(_cfg(data, tmp / name, stop_at_step=steps, **kw))
    return load_checkpoint(list_checkpoints(out)[-1])[0]


@pytest.mark.parametrize("steps", [1, 3])
def test_b_dec_moves_at_the_factor_times_the_biases_lr(data, steps) -> None:
    path, tmp = data
    start = _after(path, tmp, f"frozen{steps}", steps, b_dec_lr_factor=0.0)
    assert start["sae.b_dec"].abs().max() == 0  # factor 0: b_dec stays at its init
    one = _after(path, tmp, f"one{steps}", steps, b_dec_lr_factor=1.0)
    quarter = _after(path, tmp, f"quarter{steps}", steps, b_dec_lr_factor=0.25)
    if steps == 1:  # Adam's first step: lr × m̂/(√v̂ + ε) from the same gradient in both runs
        assert one["sae.b_dec"].abs().min() > 0
        torch.testing.assert_close(quarter["sae.b_dec"], 0.25 * one["sae.b_dec"], rtol=1e-5, atol=0)
        for key in OTHERS:  # the same start and the same gradient: the rest moved the same
            torch.testing.assert_close(quarter[key], one[key], rtol=0, atol=0)
            torch.testing.assert_close(start[key], one[key], rtol=0, atol=0)
    else:  # later steps see b_dec's own history: the runs part, b_dec's move stays the smaller
        assert quarter["sae.b_dec"].norm() < one["sae.b_dec"].norm()
        assert not torch.equal(quarter["sae.W_enc"], one["sae.W_enc"])


def test_a_run_resumes_with_its_factor_and_refuses_another(data) -> None:
    path, tmp = data
    straight = train(_cfg(path, tmp / "straight", b_dec_lr_factor=0.25))
    paused = train(_cfg(path, tmp / "paused", b_dec_lr_factor=0.25, stop_at_step=13))
    with pytest.raises(ValueError, match="b_dec_lr_factor is 1.0 but the run .* used 0.25"):
        check_output(_cfg(path, paused, resume=True, b_dec_lr_factor=1.0))
    resumed = train(_cfg(path, paused, resume=True))  # auto (d_in 8 would give 1) follows the run's 0.25
    a, _ = load_checkpoint(list_checkpoints(straight)[-1])
    b, _ = load_checkpoint(list_checkpoints(resumed)[-1])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("d_in", "reads_x_minus_b_dec", "center", "factor"),
                         [(8, True, True, 1.0), (128, True, True, 0.5), (512, True, True, 0.25),
                          (512, True, None, 0.25), (512, True, False, 1.0), (512, False, True, 1.0)])
def test_the_auto_factor_is_the_named_factor_for_the_run(tmp_path, d_in, reads_x_minus_b_dec, center, factor) -> None:
    """Auto trains bit for bit as the factor named: 64/d_in within [0.25, 1] on a centred run whose encoder reads
    x − b_dec (d_in 8, 128, 512: 1, 0.5, 0.25; centred by --center true or by the auto rule, the mean holding 20 %
    of the energy here), 1 on an uncentred run or one whose encoder reads x. It names the factor in
    train_config.json, and b_dec's first Adam step is that factor times the step at 1."""
    x = torch.randn(300, d_in, generator=torch.Generator().manual_seed(d_in)) + 0.5
    path = save_activation_file(tmp_path / "x.safetensors", x)
    kw = {"apply_b_dec_to_input": reads_x_minus_b_dec, "center": center}
    auto = _after(path, tmp_path, "auto", 1, **kw)
    config = json.loads((tmp_path / "auto" / CONFIG_FILE).read_text())
    assert config["b_dec_lr_factor"] == factor and config["input_centred"] == (center is not False)
    named = _after(path, tmp_path, "named", 1, b_dec_lr_factor=factor, **kw)
    assert all(torch.equal(auto[k], named[k]) for k in auto)
    one = _after(path, tmp_path, "one", 1, b_dec_lr_factor=1.0, **kw)
    assert one["sae.b_dec"].abs().min() > 0
    torch.testing.assert_close(auto["sae.b_dec"], factor * one["sae.b_dec"], rtol=1e-5, atol=0)


def test_a_run_from_before_the_auto_rule_resumes_at_factor_one(tmp_path) -> None:
    """A checkpoint whose config has no b_dec_lr_factor (written before the option) resumed with the auto default
    on a centred run at d_in 256 (which alone would give 0.25) keeps factor 1 and its three Adam groups, bit for
    bit."""
    x = torch.randn(700, 256, generator=torch.Generator().manual_seed(5))
    path = save_activation_file(tmp_path / "x.safetensors", x)
    straight = train(_cfg(path, tmp_path / "straight", b_dec_lr_factor=1.0, center=True))
    paused = train(_cfg(path, tmp_path / "paused", b_dec_lr_factor=1.0, center=True, stop_at_step=13))
    for ckpt in list_checkpoints(paused):  # as an older release wrote it
        saved = json.loads((ckpt / CONFIG_FILE).read_text())
        del saved["b_dec_lr_factor"]
        (ckpt / CONFIG_FILE).write_text(json.dumps(saved))
    resumed = train(_cfg(path, paused, resume=True, center=True))
    assert json.loads((resumed / CONFIG_FILE).read_text())["b_dec_lr_factor"] == 1.0
    a, _ = load_checkpoint(list_checkpoints(straight)[-1])
    b, _ = load_checkpoint(list_checkpoints(resumed)[-1])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("bad", [-0.5, float("nan"), 101.0])
def test_an_out_of_range_factor_is_refused_with_one_line(data, bad) -> None:
    path, tmp = data
    with pytest.raises(ValueError, match=r"--b-dec-lr-factor must be in \[0, 100\]"):
        _cfg(path, tmp / "bad", b_dec_lr_factor=bad)
