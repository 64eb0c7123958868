"""The input normalisation (app/training/normalisation.py) and --center, against references written here: a
float64 mean and scale, and a run on data whose mean was taken out beforehand."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from app.sae import load_sae
from app.training.activations import FileSource, save_activation_file
from app.training.checkpoint import list_checkpoints, load_checkpoint
from app.training.config import TrainConfig
from app.training.distributed import DistContext
from app.training.normalisation import CENTER_ABOVE, MEAN_DOMINATES, input_stats, mean_energy_fraction
from app.training.resume import check_output
from app.training.trainer import INPUT_MEAN, train

# A mean 10-40× the spread of every dimension, as in Gemma 3 270M's layer 9 (93 % of E‖x‖² in the mean).
MEAN = torch.tensor([20.0, -35.5, 3.25, 12.0, -8.75, 40.0, 0.5, -17.0])


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(activations=str(data), d_sae=16, target_l0=3.0, tokens=64 * 20, batch_size=64,
                buffer_tokens=1000, checkpoint_every=4, log_every=5, out=str(out), progress=False, seed=1)
    return TrainConfig(**(base | kw))


def _zero_mean_rows(n: int = 250, seed: int = 0) -> torch.Tensor:
    """2n rows on a 1/64 grid whose column sums are exactly 0, so that MEAN + rows, its float64 mean (= MEAN) and
    the difference back are all exact in float32: centring reproduces the rows bit for bit."""
    z = torch.randint(-128, 129, (n, 8), generator=torch.Generator().manual_seed(seed)).float() / 64
    return torch.cat([z, -z])


def test_input_stats_match_a_float64_reference(tmp_path) -> None:
    x = (torch.randn(300, 8, dtype=torch.float64) * 2 + MEAN.double()).float()
    src = FileSource(save_activation_file(tmp_path / "a.safetensors", x), 200)  # block 0: rows 0..199
    rows = x[:150].double()  # norm_tokens 150 of block 0
    mu = rows.mean(0)

    def stats(**kw):
        return input_stats(src, _cfg(src.path, tmp_path / "o", norm_tokens=150, **kw), DistContext())

    mean, s = stats(center=False)
    assert mean is None and s == pytest.approx(1 / math.sqrt(rows.pow(2).sum(1).mean()), rel=1e-12)
    mean, s = stats()  # --center auto: the mean holds > 99 % of the energy here
    assert torch.allclose(mean.double(), mu, rtol=0, atol=1e-5)
    assert s == pytest.approx(1 / math.sqrt((rows - mu).pow(2).sum(1).mean()), rel=1e-12)
    assert s > 5 / math.sqrt(rows.pow(2).sum(1).mean())  # the mean held most of the energy
    mean, s = stats(center=True, normalize=False)
    assert s == 1.0 and torch.allclose(mean.double(), mu, rtol=0, atol=1e-5)
    assert stats(normalize=False, center=False) == (None, 1.0)
    flat = FileSource(save_activation_file(tmp_path / "c.safetensors", MEAN.repeat(50, 1)), 50)
    with pytest.raises(ValueError, match="every activation equals the mean"):
        input_stats(flat, _cfg(flat.path, tmp_path / "o", center=True), DistContext())


def test_centred_run_is_the_run_on_data_with_its_mean_taken_out(tmp_path) -> None:
    """--center on x = MEAN + z trains exactly as a plain run on z (same inputs bit for bit); the folded SAE then
    takes x where the plain one takes z: same latents, reconstructions MEAN apart."""
    z = _zero_mean_rows()
    x = z + MEAN
    assert torch.equal(x - MEAN, z) and torch.equal(x.double().mean(0), MEAN.double())
    centred = load_sae(train(_cfg(save_activation_file(tmp_path / "x.safetensors", x), tmp_path / "c")))
    plain = load_sae(train(_cfg(save_activation_file(tmp_path / "z.safetensors", z), tmp_path / "p", center=False)))
    uncentred = load_sae(train(_cfg(tmp_path / "x.safetensors", tmp_path / "u", center=False)))
    for name in ("W_enc", "W_dec"):
        assert torch.equal(getattr(centred, name), getattr(plain, name)), name
    assert torch.equal(centred.threshold, plain.threshold)
    with torch.no_grad():
        f_c, f_p = centred.encode(x), plain.encode(z)
        assert torch.equal(f_c > 0, f_p > 0) and 0 < float((f_p > 0).float().mean()) < 0.9
        assert torch.allclose(f_c, f_p, rtol=0, atol=1e-4)
        assert torch.allclose(centred.decode(f_c), plain.decode(f_p) + MEAN, rtol=0, atol=1e-4)
        assert not torch.equal(uncentred.encode(x) > 0, f_c > 0)  # without it the run differs


def test_centred_run_resumes_exactly_and_refuses_a_changed_center(tmp_path) -> None:
    data = save_activation_file(tmp_path / "x.safetensors", torch.randn(500, 8) + MEAN)
    straight = train(_cfg(data, tmp_path / "a", center=True))
    paused = train(_cfg(data, tmp_path / "b", center=True, stop_at_step=10))
    tensors, _ = load_checkpoint(list_checkpoints(paused)[-1])
    assert torch.allclose(tensors[INPUT_MEAN], MEAN, atol=0.2)  # the mean of 500 rows of N(MEAN, 1)
    with pytest.raises(ValueError, match="center is False but the run .* used True"):
        check_output(_cfg(data, tmp_path / "b", resume=True, center=False))
    resumed = train(_cfg(data, tmp_path / "b", center=True, resume=True))
    a, b = load_file(str(straight / "sae_weights.safetensors")), load_file(str(resumed / "sae_weights.safetensors"))
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_mean_energy_fraction_and_the_warning_without_center(tmp_path, caplog) -> None:
    x = torch.tensor([[3.0, 0.0], [1.0, 0.0]])  # μ = (2, 0): ‖μ‖² = 4, E‖x‖² = (9 + 1) / 2 = 5
    assert mean_energy_fraction(x) == pytest.approx(0.8)
    dominated = torch.randn(400, 8) + MEAN  # ‖μ‖² ≈ 3,700 against a spread of 8
    assert mean_energy_fraction(dominated) > 0.99 > MEAN_DOMINATES > mean_energy_fraction(torch.randn(400, 8))
    src = FileSource(save_activation_file(tmp_path / "d.safetensors", dominated), 400)
    with caplog.at_level("WARNING", logger="app.training.normalisation"):
        input_stats(src, _cfg(src.path, tmp_path / "o"), DistContext())
        assert not caplog.records  # centred: nothing to say
        input_stats(src, _cfg(src.path, tmp_path / "o", center=False), DistContext())
    assert len(caplog.records) == 1 and "mean holds 100 % of their energy" in caplog.text


def _rows_with_share(share: float, n: int = 400) -> torch.Tensor:
    """2n rows of exactly zero mean (±z) moved by a mean whose share of E‖x‖² is exactly `share` (float64)."""
    z = _zero_mean_rows(n).double()
    spread = float(z.pow(2).sum(1).mean())  # E‖z‖²; ‖μ‖² / (‖μ‖² + E‖z‖²) = share
    direction = MEAN.double() / MEAN.double().norm()
    return z + direction * math.sqrt(share / (1 - share) * spread)


@pytest.mark.parametrize(("share", "centred"), [(0.015, False), (0.025, False), (0.035, True), (0.53, True)])
def test_default_centres_exactly_when_the_mean_holds_three_percent_of_the_energy(tmp_path, share, centred,
                                                                                 caplog) -> None:
    """--center unset decides on the mean's share of the energy (a float64 reference here): at or above 3 %
    (docs/training.md, twentieth pass) it is --center true, below it --center false, for the statistics and for
    the whole run."""
    assert (share >= CENTER_ABOVE) == centred
    x = _rows_with_share(share)
    assert mean_energy_fraction(x) == pytest.approx(share, rel=1e-9)
    src = FileSource(save_activation_file(tmp_path / "a.safetensors", x.float()), 800)

    def stats(**kw):
        return input_stats(src, _cfg(src.path, tmp_path / "o", **kw), DistContext())

    with caplog.at_level("INFO", logger="app.training.normalisation"):
        auto = stats()
    same_as = stats(center=share >= CENTER_ABOVE)
    assert auto[1] == same_as[1] and (auto[0] is None) == (same_as[0] is None) == (share < CENTER_ABOVE)
    if auto[0] is not None:
        assert torch.equal(auto[0], same_as[0])
    assert f"{100 * share:.1f} %" in caplog.text and ("not centred" in caplog.text) == (share < CENTER_ABOVE)
    if share in (0.025, 0.035):  # either side of the line: the trained SAEs are the explicit runs', bit for bit
        a = train(_cfg(src.path, tmp_path / "auto"))
        b = train(_cfg(src.path, tmp_path / "explicit", center=share >= CENTER_ABOVE))
        wa, wb = load_file(str(a / "sae_weights.safetensors")), load_file(str(b / "sae_weights.safetensors"))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
        saved = json.loads((a / "train_config.json").read_text())
        assert saved["center"] is None and saved["input_centred"] == (share >= CENTER_ABOVE)
