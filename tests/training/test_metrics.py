"""Streaming metrics against brute-force definitions (SPEC §3)."""

from __future__ import annotations

import torch

from app.training.metrics import FVUAccumulator, LatentStats, density_histogram, fvu, l0


def test_fvu_streaming_equals_brute_force_with_global_mean() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 7, generator=g, dtype=torch.float64) * 3 + 50.0  # big offset
    x_hat = x + 0.5 * torch.randn(1000, 7, generator=g, dtype=torch.float64)
    brute = float(((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
    acc = FVUAccumulator()
    for chunk in range(0, 1000, 137):
        acc.update(x[chunk:chunk + 137], x_hat[chunk:chunk + 137])
    assert abs(acc.fvu() - brute) < 1e-9
    assert abs(fvu(x, x_hat) - brute) < 1e-9
    # Per-batch means would give a different (wrong) number: the global mean matters.
    per_batch = sum(float(((x[i:i + 10] - x_hat[i:i + 10]) ** 2).sum()) for i in range(0, 1000, 10)) / sum(
        float(((x[i:i + 10] - x[i:i + 10].mean(0)) ** 2).sum()) for i in range(0, 1000, 10))
    assert abs(per_batch - brute) > 1e-3
    assert abs(acc.mse - float(((x - x_hat) ** 2).sum(-1).mean())) < 1e-9


def test_fvu_merge_equals_single_pass() -> None:
    x = torch.randn(300, 5)
    x_hat = x * 0.9
    a, b, whole = FVUAccumulator(), FVUAccumulator(), FVUAccumulator()
    a.update(x[:100], x_hat[:100])
    b.update(x[100:] + 1.0, x_hat[100:] + 1.0)
    whole.update(torch.cat([x[:100], x[100:] + 1.0]), torch.cat([x_hat[:100], x_hat[100:] + 1.0]))
    a.merge(b)
    assert abs(a.fvu() - whole.fvu()) < 1e-12


def test_latent_stats_l0_density_dead_dense() -> None:
    g = torch.Generator().manual_seed(1)
    active = torch.rand(500, 6, generator=g) < torch.tensor([0.5, 0.05, 0.0, 0.2, 0.0, 0.01])
    active[10, 4] = True  # latent 4 fires once, early: dead over the last 100 tokens
    stats = LatentStats(d_sae=6, dead_window=100)
    for i in range(0, 500, 64):
        stats.update(active[i:i + 64])
    assert abs(stats.l0() - float(active.sum(-1).double().mean())) < 1e-12
    assert abs(stats.l0() - l0(active)) < 1e-12
    assert torch.allclose(stats.density(), active.double().mean(0))
    brute_dead = [not bool(active[-100:, j].any()) for j in range(6)]
    assert stats.dead_mask().tolist() == brute_dead
    assert brute_dead[2] and brute_dead[4] and not brute_dead[0]
    assert stats.dense_fraction() == float((active.double().mean(0) > 0.1).double().mean())
    restored = LatentStats(d_sae=6, dead_window=100)
    restored.load_state_dict(stats.state_dict())
    assert restored.dead_mask().tolist() == brute_dead and restored.tokens == 500


def test_density_histogram_counts_every_latent() -> None:
    dens = torch.tensor([0.0, 1e-3, 1e-3, 0.5, 1.0, 1e-9])
    h = density_histogram(dens, bins=8)
    assert h["never"] == 1 and sum(h["counts"]) == 5 and len(h["edges"]) == 9
