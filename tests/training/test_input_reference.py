"""--apply-b-dec-to-input: the trainer encodes x − b_dec, records the choice, resumes it exactly and saves an SAE
that encodes raw x. References written here: the encoder and decoder written out on a checkpoint's raw training
weights, a float64 FVU of the saved SAE on the raw rows, and the unflagged run."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from app.sae import JumpReLUSAE, load_sae
from app.training.activations import save_activation_file
from app.training.checkpoint import list_checkpoints, load_checkpoint
from app.training.config import TrainConfig
from app.training.distributed import DistContext
from app.training.metrics import LatentStats
from app.training.resume import check_output
from app.training.trainer import INPUT_MEAN, Trainer, train

# An offset 1-4× the spread, left in the inputs (--center false), so b_dec has a long way to travel.
OFFSET = torch.tensor([2.0, -3.5, 0.25, 1.25, -0.75, 4.0, 0.5, -1.75])


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(activations=str(data), d_sae=16, target_l0=3.0, tokens=64 * 60, batch_size=64, buffer_tokens=1000,
                checkpoint_every=4, log_every=5, out=str(out), progress=False, seed=1, center=False,
                apply_b_dec_to_input=True)
    return TrainConfig(**(base | kw))


def _fvu(sae, x: torch.Tensor) -> float:
    """1 − explained variance of the saved SAE on raw rows, in float64 about the rows' own mean."""
    with torch.no_grad():
        x_hat = sae.decode(sae.encode(x)).double()
    x = x.double()
    return float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    x = torch.randn(600, 8, generator=torch.Generator().manual_seed(0)) * torch.linspace(0.5, 2.0, 8) + OFFSET
    data = save_activation_file(tmp / "x.safetensors", x)
    return {"x": x, "data": data, "tmp": tmp,
            "flagged": train(_cfg(data, tmp / "flagged")),
            "plain": train(_cfg(data, tmp / "plain", apply_b_dec_to_input=False))}


def test_the_run_records_the_choice_and_saves_an_sae_that_encodes_raw_x(runs) -> None:
    config = json.loads((runs["flagged"] / "train_config.json").read_text())
    assert config["apply_b_dec_to_input"] is True and config["input_centred"] is False
    assert json.loads((runs["flagged"] / "cfg.json").read_text())["apply_b_dec_to_input"] is False  # folded
    flagged, plain = load_sae(runs["flagged"]), load_sae(runs["plain"])
    assert flagged.cfg.apply_b_dec_to_input is False and float(flagged.input_scale) == 1.0
    a, b = (load_file(str(runs[k] / "sae_weights.safetensors")) for k in ("flagged", "plain"))
    assert not torch.equal(a["W_enc"], b["W_enc"])  # the flag changed the run
    # The run's own last logged FVU (normalised units, over its last steps) against the saved SAE's on raw rows:
    # a fold that dropped b_dec·W_enc from b_enc would shift every pre-activation by the offset's projection.
    logged = json.loads((runs["flagged"] / "metrics.jsonl").read_text().splitlines()[-1])["fvu"]
    saved = _fvu(flagged, runs["x"])
    assert saved == pytest.approx(logged, rel=0.1) and saved < 0.9
    f = flagged.encode(runs["x"])
    assert 1.0 < float((f > 0).float().sum(1).mean()) < 8.0  # about the target L0 of 3, on raw x
    assert _fvu(plain, runs["x"]) < 0.9


def test_a_flagged_run_resumes_exactly_and_refuses_a_changed_flag(runs) -> None:
    data, tmp = runs["data"], runs["tmp"]
    paused = train(_cfg(data, tmp / "paused", stop_at_step=12))
    tensors, _ = load_checkpoint(list_checkpoints(paused)[-1])
    assert tensors["sae.b_dec"].abs().max() > 0  # the reference point moved
    with pytest.raises(ValueError, match="apply_b_dec_to_input is False but the run .* used True"):
        check_output(_cfg(data, tmp / "paused", resume=True, apply_b_dec_to_input=False))
    resumed = train(_cfg(data, tmp / "paused", resume=True))
    a = load_file(str(runs["flagged"] / "sae_weights.safetensors"))
    b = load_file(str(resumed / "sae_weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("center", [False, True])
def test_the_saved_sae_is_the_training_sae_written_out_on_raw_x(runs, center) -> None:
    """The save folds b_dec-on-input (and μ, s, the decoder norms) away: the saved SAE's latents are the training
    SAE's, each scaled by its decoder row's norm, and its reconstruction is the training one in raw units."""
    data, tmp, x = runs["data"], runs["tmp"], runs["x"].double()
    paused = train(_cfg(data, tmp / f"mid{center}", center=center, stop_at_step=12))
    tensors, _ = load_checkpoint(list_checkpoints(paused)[-1])
    sae = JumpReLUSAE.create(8, 16, apply_b_dec_to_input=True)
    sae.use_linear_threshold()
    sae.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("sae.")})
    w = {k: v.double() for k, v in sae.state_dict().items()}
    s, mu = float(w["input_scale"]), tensors.get(INPUT_MEAN, torch.zeros(8)).double()
    assert (mu.abs().max() > 0) == center and w["b_dec"].abs().max() > 0 and s != 1.0
    pre = (s * (x - mu) - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    f_ref = pre * (pre > w["linear_threshold"])
    x_hat_ref = (f_ref @ w["W_dec"] + w["b_dec"]) / s + mu
    assert 0 < float((f_ref > 0).double().mean()) < 0.9

    trainer = Trainer(_cfg(data, tmp / f"folded{center}", center=center), DistContext())
    trainer.input_mean = tensors.get(INPUT_MEAN)
    trainer.out.mkdir()
    trainer._save_final(sae, LatentStats(16))
    saved = load_sae(trainer.out)
    with torch.no_grad():
        f = saved.encode(runs["x"]).double()
        x_hat = saved.decode(saved.encode(runs["x"])).double()
    norms = w["W_dec"].norm(dim=1)
    assert torch.equal(f > 0, f_ref > 0)
    assert torch.allclose(f, f_ref * norms, rtol=1e-4, atol=1e-4)
    assert torch.allclose(x_hat, x_hat_ref, rtol=1e-4, atol=1e-4)


def test_default_is_on_for_a_linear_threshold_and_off_for_log_threshold() -> None:
    """auto_apply_b_dec_to_input: a log θ with the learnt reference stayed at 3× its target L0 in 1,024 steps
    (tests/training/test_log_threshold.py fails with it on)."""
    base = {"activations": "a.safetensors", "out": "o", "d_sae": 8, "tokens": 4096}
    assert TrainConfig(**base).apply_b_dec_to_input is True
    assert TrainConfig(**base, threshold_param="log").apply_b_dec_to_input is False
    assert TrainConfig(**base, threshold_param="log", apply_b_dec_to_input=True).apply_b_dec_to_input is True
    assert TrainConfig(**base, apply_b_dec_to_input=False).apply_b_dec_to_input is False


def test_a_run_from_before_the_flag_resumes_as_it_began(runs) -> None:
    """A checkpoint whose config has no apply_b_dec_to_input (runs before 2026-12-05 encoded x) resumes with the
    encoder on x when the flag is left to its default, and equals a straight run with --apply-b-dec-to-input false;
    naming the other value is refused."""
    data, tmp = runs["data"], runs["tmp"]
    straight = train(_cfg(data, tmp / "old_straight", apply_b_dec_to_input=False))
    paused = train(_cfg(data, tmp / "old", apply_b_dec_to_input=False, stop_at_step=12))
    for ckpt in list_checkpoints(paused):
        path = ckpt / "train_config.json"
        saved = json.loads(path.read_text())
        del saved["apply_b_dec_to_input"]
        path.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="apply_b_dec_to_input is True but the run .* used False"):
        check_output(_cfg(data, tmp / "old", resume=True, apply_b_dec_to_input=True))
    resumed = train(_cfg(data, tmp / "old", resume=True, apply_b_dec_to_input=None))
    assert json.loads((resumed / "train_config.json").read_text())["apply_b_dec_to_input"] is False
    a = load_file(str(straight / "sae_weights.safetensors"))
    b = load_file(str(resumed / "sae_weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
