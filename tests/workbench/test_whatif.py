"""What-if θ' for one latent: the baseline is evaluate.py's, the changes equal a brute force that re-evaluates an
SAE with the edited θ (evaluate.py), density is monotone in θ' and matches the index at the stored θ."""

from __future__ import annotations

import copy

import pytest
import torch

from app.training.evaluate import evaluate_sae
from app.workbench.whatif import UnknownLatentIndex, what_if
from tests.workbench.conftest import CTX, SAMPLE_TOKENS


def evaluate(sae, lm, contexts, cache=None, factor=10.0):
    """evaluate.py with the cache's exclusion rule (same reference norm)."""
    ref = cache.outliers["reference_norm"] if cache is not None else None
    return evaluate_sae(sae, lm, contexts, batch_size=5, n_boot=0, outlier_factor=factor, norm_ref=ref)


def edited(sae, latent, threshold):
    other = copy.deepcopy(sae)
    theta = other.threshold.clone()
    theta[latent] = threshold
    other.set_threshold(theta)
    return other


def test_baseline_reproduces_evaluate(tiny_lm, wb_sae, wb_contexts, wb_cache):
    ref = evaluate(wb_sae, tiny_lm, wb_contexts[0], wb_cache)
    base = wb_cache.baseline()
    assert ref["tokens"] == wb_cache.n_tokens and ref["predictions"] == wb_cache.predictions
    assert base["l0"] == pytest.approx(ref["l0"], rel=1e-12)
    for key in ("fvu", "ce_clean", "ce_sae"):
        assert base[key] == pytest.approx(ref[key], rel=1e-6), key
    assert base["delta_lm_loss"] == pytest.approx(ref["delta_lm_loss"], rel=1e-4, abs=1e-7)


def test_stored_threshold_changes_nothing(tiny_lm, wb_sae, wb_cache):
    for i in range(wb_sae.d_sae):
        r = what_if(tiny_lm, wb_sae, wb_cache, i, float(wb_sae.threshold[i]))
        assert r["l0_change"] == r["fvu_change"] == r["delta_lm_loss_change"] == 0.0
        assert r["density"] == r["stored_density"] > 0
    assert sum(what_if(tiny_lm, wb_sae, wb_cache, i, float(wb_sae.threshold[i]), lm_loss=False)["density"]
               for i in range(wb_sae.d_sae)) == pytest.approx(wb_cache.baseline()["l0"])


@pytest.mark.parametrize("latent,factor", [(0, 0.5), (5, 1.3), (11, 0.0), (23, 2.5)])
def test_changes_equal_a_brute_force_reevaluation(tiny_lm, wb_sae, wb_contexts, wb_cache, latent, factor):
    theta = float(wb_sae.threshold[latent]) * factor
    r = what_if(tiny_lm, wb_sae, wb_cache, latent, theta)
    base = evaluate(wb_sae, tiny_lm, wb_contexts[0], wb_cache)
    new = evaluate(edited(wb_sae, latent, theta), tiny_lm, wb_contexts[0], wb_cache)
    assert r["changed_tokens"] > 0
    assert r["l0_change"] == pytest.approx(new["l0"] - base["l0"], abs=1e-12)
    assert r["fvu_change"] == pytest.approx(new["fvu"] - base["fvu"], rel=1e-4, abs=1e-7)
    assert r["delta_lm_loss_change"] == pytest.approx(new["delta_lm_loss"] - base["delta_lm_loss"], rel=1e-3,
                                                      abs=2e-6)
    assert r["density"] == pytest.approx(r["stored_density"] + r["l0_change"], abs=1e-12)


def test_density_is_monotone_in_theta_and_near_misses_sit_below_it(tiny_lm, wb_sae, wb_cache):
    for i in (0, 7, 19):
        theta = float(wb_sae.threshold[i])
        grid = [theta * f for f in (0.0, 0.25, 0.5, 0.9, 1.0, 1.1, 1.5, 3.0, 100.0)]
        dens = [what_if(tiny_lm, wb_sae, wb_cache, i, t, lm_loss=False)["density"] for t in grid]
        assert all(a >= b for a, b in zip(dens, dens[1:], strict=False)) and dens[-1] == 0.0
        r = what_if(tiny_lm, wb_sae, wb_cache, i, theta, lm_loss=False)
        maxes = [e["max"] for e in r["near_misses"]]
        assert maxes and maxes == sorted(maxes, reverse=True) and all(m <= theta for m in maxes)
        brute = sorted((float(v) for v in wb_cache.pre[:, i] if v <= torch.tensor(theta)), reverse=True)
        assert maxes[0] == brute[0]
        for e in r["near_misses"]:
            assert e["pre"][e["center"]] == e["max"] and e["values"][e["center"]] == 0.0


def test_bad_latent_and_threshold(tiny_lm, wb_sae, wb_cache):
    with pytest.raises(UnknownLatentIndex):
        what_if(tiny_lm, wb_sae, wb_cache, wb_sae.d_sae, 1.0)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            what_if(tiny_lm, wb_sae, wb_cache, 0, bad)


def test_density_at_stored_theta_is_the_index_density(tmp_path, tiny_lm, wb_sae, wb_corpus, wb_cache):
    from app.index.builder import run_index
    from app.index.config import IndexConfig
    from app.index.service import latent_dashboard

    cfg = IndexConfig(context_size=CTX, batch_contexts=4, top_k=3, n_intervals=2, per_interval=1, outlier_factor=0,
                      loss_effects=False, n_logits=2, n_neighbors=2)
    db = run_index(tiny_lm, wb_sae, wb_corpus, SAMPLE_TOKENS, tmp_path / "index.db", cfg)
    for i in range(wb_sae.d_sae):
        d = latent_dashboard(db, i)
        assert d["tokens_seen"] == wb_cache.n_tokens
        r = what_if(tiny_lm, wb_sae, wb_cache, i, d["threshold"], lm_loss=False)
        assert r["density"] == d["density"], i


def test_the_cache_starts_forwards_at_the_hook(wb_cache):
    assert wb_cache.skip_prefix  # resid_post of a llama block: the blocks up to the hook are skipped


@pytest.mark.parametrize("family,hook,skips", [("gpt2", "blocks.1.hook_resid_pre", True),
                                                ("llama", "blocks.1.hook_mlp_out", False)])
def test_other_families_and_hooks_match_a_reevaluation(tiny_model_dir, wb_corpus, family, hook, skips):
    from app.lm import load_lm
    from app.lm.corpus import load_contexts
    from app.lm.hooks import capture, parse_hook_name
    from app.sae import JumpReLUSAE
    from app.workbench.cache import build_cache

    lm = load_lm(tiny_model_dir(family), device="cpu")
    sae = JumpReLUSAE.create(lm.d_model, 16, seed=1, metadata={"hook_name": hook})
    contexts = load_contexts(lm, wb_corpus, CTX, n_tokens=192, shuffle=False)
    h = capture(lm, contexts, None, *parse_hook_name(hook))[:, 1:].reshape(-1, lm.d_model)
    with torch.no_grad():
        sae.set_threshold(sae.pre_acts(h).quantile(0.8, dim=0).clamp_min(1e-3))
    sae.requires_grad_(False)
    cache = build_cache(lm, sae, contexts)
    assert cache.skip_prefix == skips
    base = evaluate(sae, lm, contexts, cache)
    assert cache.baseline()["delta_lm_loss"] == pytest.approx(base["delta_lm_loss"], rel=1e-4, abs=1e-7)
    theta = float(sae.threshold[2]) * 0.6
    r = what_if(lm, sae, cache, 2, theta)
    new = evaluate(edited(sae, 2, theta), lm, contexts, cache)
    assert r["changed_tokens"] > 0
    assert r["delta_lm_loss_change"] == pytest.approx(new["delta_lm_loss"] - base["delta_lm_loss"], rel=1e-3,
                                                      abs=2e-6)
    assert r["fvu_change"] == pytest.approx(new["fvu"] - base["fvu"], rel=1e-4, abs=1e-7)


def test_outlier_positions_are_excluded_like_evaluate(tiny_lm, wb_sae, wb_contexts):
    """A low outlier factor excludes some positions: the cache excludes the same ones as evaluate.py (same rule,
    same reference norm), so the baseline and a what-if still match a re-evaluation."""
    from app.workbench.cache import build_cache

    contexts = wb_contexts[0]
    cache = build_cache(tiny_lm, wb_sae, contexts, outlier_factor=1.15)
    excluded = cache.outliers["excluded_positions"]
    assert 0 < excluded < cache.n_tokens
    base = evaluate(wb_sae, tiny_lm, contexts, cache, factor=1.15)
    assert base["tokens"] == cache.n_tokens and base["outliers"]["excluded_positions"] == excluded
    assert cache.baseline()["fvu"] == pytest.approx(base["fvu"], rel=1e-6)
    assert cache.baseline()["delta_lm_loss"] == pytest.approx(base["delta_lm_loss"], rel=1e-4, abs=1e-7)
    theta = float(wb_sae.threshold[4]) * 0.5
    r = what_if(tiny_lm, wb_sae, cache, 4, theta)
    new = evaluate(edited(wb_sae, 4, theta), tiny_lm, contexts, cache, factor=1.15)
    assert r["l0_change"] == pytest.approx(new["l0"] - base["l0"], abs=1e-12)
    assert r["delta_lm_loss_change"] == pytest.approx(new["delta_lm_loss"] - base["delta_lm_loss"], rel=1e-3,
                                                      abs=2e-6)
