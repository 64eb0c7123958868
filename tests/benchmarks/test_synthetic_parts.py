"""The planted-dictionary generator and ground-truth metrics of benchmarks/synthetic*.py on hand-checkable cases."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
import torch

# scipy (Hungarian matching) comes with the benchmark's sae-lens (the `interop` extra); the lowest-bounds
# environment has no sae-lens, so these tests skip there.
pytest.importorskip("scipy", reason="benchmarks/synthetic_metrics.py needs scipy (installed with the interop extra)")

from benchmarks.synthetic_data import PlantedDictionary, SynthConfig, at_width
from benchmarks.synthetic_metrics import at_least_as_good, firing_scores, hungarian, mean_l0, rare_recovery, score


def test_marginals_l0_and_zipf_follow_the_config() -> None:
    cfg = SynthConfig(d=16, ratio=4.0, l0=3.0, zipf=1.0, fire_correlation=0.5)
    truth = PlantedDictionary(cfg, seed=1)
    assert truth.dirs.shape == (64, 16)
    torch.testing.assert_close(truth.dirs.norm(dim=1), torch.ones(64))
    assert abs(float(truth.p.sum()) - 3.0) < 1e-9
    ranked = truth.p.sort(descending=True).values
    assert float(ranked[0] / ranked[9]) == pytest.approx(10.0, rel=1e-6)  # p ∝ rank^-1
    x, fire = truth.sample(100_000, seed=2)
    assert x.shape == (100_000, 16) and fire.shape == (100_000, 64)
    # the copula keeps every marginal: empirical frequencies within 5 binomial sigmas
    freq = fire.double().mean(0)
    sigma = (truth.p * (1 - truth.p) / 100_000).sqrt()
    assert bool(((freq - truth.p).abs() <= 5 * sigma + 1e-4).all())
    assert abs(float(fire.sum(1).double().mean()) - 3.0) < 0.05


def test_activations_are_the_magnitude_weighted_sum_of_firing_directions() -> None:
    truth = PlantedDictionary(SynthConfig(d=8, ratio=2.0, l0=2.0, mag_noise=0.0, mag_spread=0.0), seed=0)
    x, fire = truth.sample(500, seed=3)
    torch.testing.assert_close(x, fire.float() @ truth.dirs)  # magnitudes exactly 1, no noise


def test_children_fire_only_with_their_parent_and_lie_near_it() -> None:
    cfg = SynthConfig(d=32, ratio=2.0, l0=4.0, n_parents=4, children=3)
    truth = PlantedDictionary(cfg, seed=0)
    _, fire = truth.sample(50_000, seed=1)
    for child in range(4, 16):
        parent = int(truth.parent[child])
        assert parent == (child - 4) // 3
        assert not bool((fire[:, child] & ~fire[:, parent]).any())
        assert float(truth.dirs[child] @ truth.dirs[parent]) > 0.6  # parent + 0.8·noise: cos ≈ 0.78


def test_hungarian_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    cos = torch.rand(5, 5, generator=g, dtype=torch.float64)
    best = max(itertools.permutations(range(5)), key=lambda perm: sum(float(cos[i, perm[i]]) for i in range(5)))
    rows, cols = hungarian(cos)
    assert [int(c) for c in cols[rows.argsort()]] == list(best)


def test_mean_l0_counts_by_hand() -> None:
    mask = torch.tensor([[True, False, True], [False, False, False], [True, True, True], [False, True, False]])
    assert mean_l0(mask) == (2 + 0 + 3 + 1) / 4
    big = torch.rand(1000, 37, generator=torch.Generator().manual_seed(0)) < 0.2
    assert mean_l0(big) == sum(int(v) for row in big.tolist() for v in row) / 1000


def test_firing_scores_by_hand() -> None:
    # pair 0: true fires on tokens {0,1,2,3}, latent on {2,3,4}: precision 2/3, recall 1/2, F1 4/7
    # pair 1: the latent never fires: precision 0, recall 0, F1 0
    true_fire = torch.tensor([[1, 1], [1, 0], [1, 0], [1, 0], [0, 0]], dtype=torch.bool)
    latent_fire = torch.tensor([[0, 0], [0, 0], [1, 0], [1, 0], [1, 0]], dtype=torch.bool)
    precision, recall, f1 = firing_scores(true_fire, latent_fire)
    assert precision == pytest.approx((2 / 3) / 2)
    assert recall == pytest.approx(0.5 / 2)
    assert f1 == pytest.approx((4 / 7) / 2)


def test_a_perfect_sae_scores_perfectly_and_a_permuted_rescaled_one_too() -> None:
    truth = PlantedDictionary(SynthConfig(d=16, ratio=2.0, l0=3.0, mag_noise=0.0), seed=4)
    x, fire = truth.sample(2000, seed=5)
    codes = fire.float() * truth.mag_mean  # exact codes
    perm = torch.randperm(32, generator=torch.Generator().manual_seed(0))
    w_dec = -2.5 * truth.dirs[perm]  # sign and scale do not matter for |cos|
    latents = codes[:, perm]
    s = score(truth.dirs, fire, x, w_dec, latents, x)
    for key in ("mcc", "max_cos", "max_cos_rare", "precision", "recall", "f1", "shrinkage"):
        assert s[key] == pytest.approx(1.0), key
    assert s["fvu"] == pytest.approx(0.0, abs=1e-12)
    assert s["l0"] == pytest.approx(float(fire.sum(1).double().mean()))
    assert s["dead"] == (~fire.any(0)).double().mean().item()


def test_a_half_scaled_reconstruction_and_an_orthogonal_latent() -> None:
    dirs = torch.eye(2)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    fire = x > 0
    w_dec = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # latent 1 at 45° to direction 1
    latents = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    s = score(dirs, fire, x, w_dec, latents, 0.5 * x)
    assert s["max_cos"] == pytest.approx((1 + 2**-0.5) / 2)
    assert s["mcc"] == pytest.approx((1 + 2**-0.5) / 2)
    assert s["shrinkage"] == pytest.approx(0.5)
    assert s["dead"] == 0.5 and s["l0"] == pytest.approx(2 / 3)
    assert s["recall"] == pytest.approx(0.5)  # latent 0 recalls direction 0 fully, latent 1 never fires


def test_rare_recovery_averages_the_least_firing_quarter() -> None:
    # four directions firing 5, 1, 3 and 2 times; the decoder finds all but direction 1 (45° off)
    dirs = torch.eye(4)
    counts = [5, 1, 3, 2]
    fire = torch.zeros(6, 4, dtype=torch.bool)
    for j, c in enumerate(counts):
        fire[:c, j] = True
    w_dec = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 1.0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    x = fire.float()
    s = score(dirs, fire, x, w_dec, x, x)
    assert s["max_cos_rare"] == pytest.approx(2**-0.5)  # the quarter = direction 1 alone
    assert s["max_cos"] == pytest.approx((3 + 2**-0.5) / 4)
    # eight directions: the rarest two (a quarter), whatever their order
    best = torch.tensor([1.0, 0.2, 1.0, 1.0, 0.6, 1.0, 1.0, 1.0])
    fire8 = torch.zeros(10, 8, dtype=torch.bool)
    for j, c in enumerate([9, 1, 8, 7, 2, 6, 5, 4]):
        fire8[:c, j] = True
    assert rare_recovery(best, fire8) == pytest.approx(0.4)


def test_at_least_as_good_respects_each_direction() -> None:
    base = {"mcc": 0.9, "max_cos": 0.9, "precision": 0.8, "recall": 0.8, "f1": 0.8, "shrinkage": 0.9,
            "fvu": 0.2, "dead": 0.1}
    better = base | {"fvu": 0.1, "shrinkage": 1.05, "dead": 0.0}
    assert all(at_least_as_good(better, base).values())
    worse = at_least_as_good(base | {"shrinkage": 0.8, "fvu": 0.3}, base)
    assert not worse["shrinkage"] and not worse["fvu"] and worse["mcc"]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="l0"):
        SynthConfig(d=4, ratio=1.0, l0=5.0)
    with pytest.raises(ValueError, match="n_parents"):
        SynthConfig(d=4, ratio=2.0, l0=1.0, n_parents=3, children=3)


def test_a_setting_at_another_width_keeps_its_superposition_hierarchy_share_and_noise_norm() -> None:
    from benchmarks.synthetic import SETTINGS

    for name, cfg in SETTINGS.items():
        wide = at_width(cfg, 4 * cfg.d)
        assert wide.d == 4 * cfg.d and wide.n_dirs == 4 * cfg.n_dirs, name
        assert (wide.ratio, wide.l0, wide.zipf, wide.dir_correlation) == (cfg.ratio, cfg.l0, cfg.zipf,
                                                                          cfg.dir_correlation)
        assert wide.n_parents * (1 + wide.children) / wide.n_dirs == cfg.n_parents * (1 + cfg.children) / cfg.n_dirs
    # the noise vector's expected norm σ√d is kept: measured on activations with nothing firing but noise
    base = SynthConfig(d=16, ratio=2.0, l0=1e-6, noise=0.1)
    norms = [PlantedDictionary(c, seed=0).sample(20_000, seed=1)[0].norm(dim=1).pow(2).mean().sqrt()
             for c in (base, at_width(base, 64))]
    assert float(norms[0]) == pytest.approx(0.1 * 4, rel=0.02)
    assert float(norms[1]) == pytest.approx(float(norms[0]), rel=0.02)
    assert at_width(SETTINGS["s8h"], 256).n_parents == 128


def test_a_width_below_one_is_refused_with_one_line(capsys) -> None:
    from benchmarks.synthetic import main

    with pytest.raises(SystemExit) as stop:
        main(["--d", "0"])
    assert stop.value.code == 2
    assert "--d must be a positive activation width, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("share", [0.3, 0.6])
def test_a_mean_share_is_met_on_fresh_tokens_by_a_constant_shift_of_the_same_data(share: float) -> None:
    base = SynthConfig(d=32, ratio=4.0, l0=4.0, zipf=0.7, noise=0.05)
    plain, shifted = PlantedDictionary(base, seed=2), PlantedDictionary(replace(base, mean_share=share), seed=2)
    x0, fire0 = plain.sample(100_000, seed=5)
    x1, fire1 = shifted.sample(100_000, seed=5)
    assert torch.equal(fire0, fire1) and torch.equal(plain.dirs, shifted.dirs)  # the same planted data ...
    shift = x1 - x0  # ... moved by one vector
    torch.testing.assert_close(shift, shift[:1].expand_as(shift), atol=1e-5, rtol=0)
    x = x1.double()  # the share on tokens the calibration never saw, in float64
    measured = float(x.mean(0).pow(2).sum() / x.pow(2).sum(1).mean())
    assert measured == pytest.approx(share, abs=0.005)
    assert float(x0.double().mean(0).pow(2).sum() / x0.double().pow(2).sum(1).mean()) < share - 0.1


def test_a_mean_share_below_the_planted_one_or_out_of_range_is_refused(capsys) -> None:
    from benchmarks.synthetic import main

    cfg = SynthConfig(d=16, ratio=2.0, l0=2.0, mag_spread=0.0, mag_noise=0.0)  # non-negative: its mean is large
    with pytest.raises(ValueError, match="already holds"):
        PlantedDictionary(replace(cfg, mean_share=0.01), seed=0)
    with pytest.raises(ValueError, match="mean_share"):
        replace(cfg, mean_share=1.0)
    with pytest.raises(SystemExit) as stop:
        main(["--mean-share", "-0.1"])
    assert stop.value.code == 2
    assert "--mean-share must be in [0, 1), got -0.1" in capsys.readouterr().err
