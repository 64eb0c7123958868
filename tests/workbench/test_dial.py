"""The sparsity dial: points equal evaluate.py on an SAE with scaled thresholds, L0 falls along the curve, the
target-L0 search lands on it, and a saved edited SAE round-trips (θ exact, provenance) and serves the same."""

from __future__ import annotations

import json

import pytest
import torch

from app.sae import load_sae
from app.training.evaluate import evaluate_sae
from app.workbench.dial import (
    dial_curve,
    dial_point,
    edited_copy,
    factor_for_l0,
    l0_at,
    save_edited,
    scaled_thresholds,
)


def test_a_dial_point_equals_evaluate_with_scaled_thresholds(tiny_lm, wb_sae, wb_contexts, wb_cache):
    for s in (1.0, 0.6):
        got = dial_point(tiny_lm, wb_sae, wb_cache, scaled_thresholds(wb_sae, s))
        ref = evaluate_sae(edited_copy(wb_sae, scaled_thresholds(wb_sae, s)), tiny_lm, wb_contexts[0], n_boot=0,
                           norm_ref=wb_cache.outliers["reference_norm"])
        assert got["l0"] == pytest.approx(ref["l0"], rel=1e-12)
        assert got["fvu"] == pytest.approx(ref["fvu"], rel=1e-6)
        assert got["delta_lm_loss"] == pytest.approx(ref["delta_lm_loss"], rel=1e-4, abs=1e-7)
    base = wb_cache.baseline()
    one = dial_point(tiny_lm, wb_sae, wb_cache, scaled_thresholds(wb_sae, 1.0))
    assert one["l0"] == base["l0"] and one["fvu"] == pytest.approx(base["fvu"], rel=1e-9)


def test_l0_never_increases_along_the_curve(tiny_lm, wb_sae, wb_cache):
    curve = dial_curve(tiny_lm, wb_sae, wb_cache, [2.0, 0.25, 1.0, 0.5, 4.0, 1.5], lm_loss=False)
    assert [p["factor"] for p in curve] == [0.25, 0.5, 1.0, 1.5, 2.0, 4.0]
    l0 = [p["l0"] for p in curve]
    assert all(a >= b for a, b in zip(l0, l0[1:], strict=False)) and l0[0] > l0[-1]
    with pytest.raises(ValueError):
        dial_curve(tiny_lm, wb_sae, wb_cache, [0.0])


def test_target_l0_search(wb_sae, wb_cache):
    base = wb_cache.baseline()["l0"]
    for target in (base / 2, base * 1.5):
        s = factor_for_l0(wb_sae, wb_cache, target)
        got = l0_at(wb_cache, scaled_thresholds(wb_sae, s))
        # the closest achievable L0: one position-latent pair more or less would overshoot
        assert abs(got - target) <= 1.0 / wb_cache.n_tokens * 24 + 1e-9
        assert (s < 1) == (target > base)


def test_saved_edited_sae_round_trips(tmp_path, tiny_lm, wb_sae, wb_sae_folder, wb_contexts):
    theta = scaled_thresholds(wb_sae, 0.7)
    theta[3] = 0.123
    out = save_edited(wb_sae, theta, tmp_path / "edited", wb_sae_folder, {"factor": 0.7, "latents": {"3": 0.123}})
    loaded = load_sae(out, device="cpu")
    assert torch.equal(loaded.threshold, theta)
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        assert torch.equal(getattr(loaded, name), getattr(wb_sae, name)), name
    meta = json.loads((out / "cfg.json").read_text())["metadata"]
    assert meta["threshold_edit"]["source"] == str(wb_sae_folder.resolve())
    assert meta["threshold_edit"]["edit"] == {"factor": 0.7, "latents": {"3": 0.123}}
    assert meta["hook_name"] == wb_sae.cfg.metadata["hook_name"]
    a = evaluate_sae(loaded, tiny_lm, wb_contexts[0], n_boot=0)
    b = evaluate_sae(edited_copy(wb_sae, theta), tiny_lm, wb_contexts[0], n_boot=0)
    assert a["l0"] == b["l0"] and a["fvu"] == pytest.approx(b["fvu"], rel=1e-9)
    with pytest.raises(FileExistsError):
        save_edited(wb_sae, theta, out, wb_sae_folder, {"factor": 0.7})
