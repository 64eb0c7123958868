"""A run with a polish (app/training/polished.py): nearer a planted dictionary than the same run without it, rows
within the cone, its folder layout, exact resume across both parts and the polish, and clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from app.sae import load_sae
from app.training.activations import save_activation_file
from app.training.config import TrainConfig
from app.training.polished import FIRST_DIR, POLISH_DIR, ROWS_FILE, ROWS_KEY, STATE_FILE, part_configs
from app.training.trainer import train
from tests.training.planted import planted_activations


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(activations=str(data), d_sae=64, target_l0=3.0, tokens=262_144, batch_size=1024, out=str(out),
                progress=False, checkpoint_every=0, polish_tokens=65_536, seed=0)
    return TrainConfig(**(base | kw))


def _unit(w: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(w.detach().float(), dim=1)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """4× superposition at d 16: the default recipe settles well short of the planted rows here."""
    x, dirs, l0 = planted_activations(65_536, d_in=16, n_true=64, l0=3.0, seed=0)
    data = save_activation_file(tmp_path_factory.mktemp("planted") / "acts.safetensors", x)
    return data, dirs, l0


def test_the_polish_recovers_more_of_a_planted_dictionary_and_keeps_rows_in_its_cone(planted, tmp_path) -> None:
    data, dirs, l0 = planted
    plain = load_sae(train(_cfg(data, tmp_path / "plain", target_l0=l0)))
    out = train(_cfg(data, tmp_path / "polished", target_l0=l0, polish_share=0.5, polish_cone=0.98))
    polished = load_sae(out)

    def recovery(sae) -> float:  # the reference: the planted directions, each matched to its best row
        return (dirs @ _unit(sae.W_dec).T).abs().max(dim=1).values.mean().item()

    assert recovery(polished) > recovery(plain) + 0.04, (recovery(plain), recovery(polished))
    rows = load_file(str(out / POLISH_DIR / ROWS_FILE))[ROWS_KEY]
    tilt = (_unit(polished.W_dec) * _unit(rows)).sum(dim=1)
    assert tilt.min() >= 0.98 - 1e-5  # every row kept within the cone ...
    assert tilt.mean() < 1 - 1e-4  # ... and trained within it, not held
    first = load_sae(out / POLISH_DIR / FIRST_DIR)
    assert (_unit(first.W_dec) * _unit(rows)).sum(dim=1).mean() < 0.99  # the polish moved the rows


def test_layout_and_records(planted, tmp_path) -> None:
    data, _, l0 = planted
    cfg = _cfg(data, tmp_path / "o", target_l0=l0, polish_share=0.25, tokens=131_072)
    out = train(cfg)
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["tokens"] == 98_304 and saved["split_jaccard"] == 0.0 and saved["collapse_share"] == 0.0
    assert saved["polish"] == {"polish_share": 0.25, "polish_cone": 0.98, "polish_tokens": 65_536,
                               "polish_epochs": 2, "tokens": 131_072, "first_tokens": 32_768,
                               "first": f"{POLISH_DIR}/{FIRST_DIR}"}
    whole = json.loads((out / POLISH_DIR / "train_config.json").read_text())
    assert whole["tokens"] == 131_072 and whole["polish_share"] == 0.25
    first = json.loads((out / POLISH_DIR / FIRST_DIR / "train_config.json").read_text())
    assert first["tokens"] == 32_768 and first["polish_share"] == 0.0 and first["split_jaccard"] == 0.9
    assert json.loads((out / POLISH_DIR / STATE_FILE).read_text())["buffer"]["offset"] == 32_768
    assert (out / "summary.json").exists() and (out / POLISH_DIR / FIRST_DIR / "cfg.json").exists()


@pytest.mark.parametrize("stops", [(40,), (64,), (100,), (40, 100)])
def test_pause_and_resume_anywhere_gives_the_uninterrupted_result(planted, tmp_path, stops) -> None:
    data, _, l0 = planted
    kw = dict(target_l0=l0, polish_share=0.5, tokens=131_072, checkpoint_every=8)  # 128 steps, 64 in each part
    straight = train(_cfg(data, tmp_path / "a", **kw))
    out = tmp_path / "b"
    for i, stop in enumerate(stops):
        train(_cfg(data, out, stop_at_step=stop, resume=i > 0, **kw))
        assert not (out / "cfg.json").exists()  # not finished
    resumed = train(_cfg(data, out, resume=True, **kw))
    a, b = load_file(str(straight / "sae_weights.safetensors")), load_file(str(resumed / "sae_weights.safetensors"))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert torch.equal(load_file(str(straight / POLISH_DIR / ROWS_FILE))[ROWS_KEY],
                       load_file(str(resumed / POLISH_DIR / ROWS_FILE))[ROWS_KEY])


def test_bad_settings_say_what_to_fix(planted, tmp_path) -> None:
    data, _, _ = planted
    with pytest.raises(ValueError, match="--polish-share needs --target-l0"):
        TrainConfig(activations=str(data), d_sae=64, l0_coefficient=1e-3, tokens=8192, out=str(tmp_path / "x"),
                    polish_share=0.5)
    for kw, message in [({"polish_share": 1.0}, "--polish-share must be in"),
                        ({"polish_cone": 0.0}, "--polish-cone must be a cosine"),
                        ({"polish_tokens": 10}, "--polish-tokens must be at least one batch"),
                        ({"polish_epochs": 0}, "--polish-epochs must be >= 1")]:
        with pytest.raises(ValueError, match=message):
            _cfg(data, tmp_path / "x", **({"polish_share": 0.5} | kw))
    with pytest.raises(ValueError, match="each part needs at least one batch"):
        part_configs(_cfg(data, tmp_path / "x", polish_share=0.001, tokens=8192))
    with pytest.raises(FileNotFoundError, match="holds no run with a polish"):
        train(_cfg(data, tmp_path / "none", polish_share=0.5, resume=True))
    with pytest.raises(ValueError, match="--d-in 8 does not match"):
        train(_cfg(data, tmp_path / "wide", polish_share=0.5, d_in=8))
    assert not (tmp_path / "wide").exists()  # nothing written


def test_resume_with_other_polish_settings_is_refused(planted, tmp_path) -> None:
    data, _, l0 = planted
    kw = dict(target_l0=l0, polish_share=0.5, tokens=65_536, checkpoint_every=8)
    train(_cfg(data, tmp_path / "o", stop_at_step=40, **kw))
    with pytest.raises(ValueError, match="polish_cone is 0.9 but the run"):
        train(_cfg(data, tmp_path / "o", resume=True, polish_cone=0.9, **kw))
    with pytest.raises(FileExistsError, match="already exists"):
        train(_cfg(data, tmp_path / "o", **kw))


def test_a_sweep_refuses_the_polish(planted, tmp_path) -> None:
    from app.training.sweep import train_sweep

    data, _, l0 = planted
    configs = [_cfg(data, tmp_path / "s" / str(n), d_sae=n, target_l0=l0, polish_share=0.5) for n in (32, 64)]
    with pytest.raises(ValueError, match="does not run in a sweep"):
        train_sweep(configs, tmp_path / "s")
