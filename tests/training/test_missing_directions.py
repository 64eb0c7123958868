"""Missing directions (app/training/missing_directions.py): held against planted residuals (directions no latent
holds, hidden among residuals that scatter) and against brute forces written here in float64 loops: the greedy
clusters, the matching-pursuit novelty, the greedy pairing and the pooling window."""

from __future__ import annotations

import math

import pytest
import torch

from app.sae import JumpReLUSAE, SAEConfig
from app.training import missing_directions as md
from app.training.missing_directions import (
    ResidualPool,
    match,
    missing_directions,
    novelty,
    pools_at,
    residual_clusters,
    support,
)


def _planted(d: int = 48, n_dirs: int = 6, per_dir: int = 14, scatter: int = 600, seed: int = 0):
    """Residuals of tokens on which one of `n_dirs` unit directions fires (a·d_k plus an error of half its norm in
    a random direction), among `scatter` residuals of the same size that point anywhere."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.linalg.qr(torch.randn(d, n_dirs, generator=g, dtype=torch.float64))[0].t().float()
    rows = []
    for k in range(n_dirs):
        a = 1.0 + torch.rand(per_dir, 1, generator=g)
        noise = torch.randn(per_dir, d, generator=g)
        rows.append(a * dirs[k] + 0.5 * a * noise / noise.norm(dim=1, keepdim=True))
    noise = torch.randn(scatter, d, generator=g)
    rows.append(1.5 * noise / noise.norm(dim=1, keepdim=True))
    residuals = torch.cat(rows)
    return dirs, residuals[torch.randperm(len(residuals), generator=g)]


def others_unit(dirs: torch.Tensor) -> torch.Tensor:
    """A unit vector orthogonal to every row of `dirs`."""
    v = torch.randn(dirs.shape[1], generator=torch.Generator().manual_seed(11))
    v = v - dirs.t() @ (dirs @ v)
    return v / v.norm()


def _clusters_brute(residuals: torch.Tensor) -> tuple[list[list[float]], list[int]]:
    """The greedy clustering of the module docstring, one residual at a time in float64."""
    u = [r / r.norm() for r in residuals.double()]
    n = len(u)
    near = [[float(u[i] @ u[j]) >= md.TAU for j in range(n)] for i in range(n)]
    free = [True] * n
    centres, seeds = [], []
    while True:
        counts = [sum(near[i][j] and free[j] for j in range(n)) if free[i] else 0 for i in range(n)]
        seed = max(range(n), key=lambda i: (counts[i], -i))
        if counts[seed] < md.MIN_MEMBERS:
            break
        taken = {j for j in range(n) if near[seed][j] and free[j]}
        centre = sum(residuals.double()[j] for j in taken)
        centre = centre / centre.norm()
        for _ in range(md.REFINE):
            members = {j for j in range(n) if free[j] and float(u[j] @ centre) >= md.TAU}
            if not members:
                break
            centre = sum(residuals.double()[j] for j in members)
            centre = centre / centre.norm()
            taken |= members
        centres.append(centre.tolist())
        seeds.append(seed)
        for j in taken:
            free[j] = False
    return centres, seeds


@pytest.mark.parametrize("block", [1024, 50, 16])  # one block, and blocks that do not divide the 156 residuals
def test_clusters_match_a_brute_force(block, monkeypatch) -> None:
    monkeypatch.setattr(md, "BLOCK", block)
    _, residuals = _planted(d=16, n_dirs=4, per_dir=9, scatter=120, seed=3)
    centres, seeds = residual_clusters(residuals)
    want_centres, want_seeds = _clusters_brute(residuals)
    assert seeds.tolist() == want_seeds and len(want_seeds) >= 4
    torch.testing.assert_close(centres, torch.tensor(want_centres, dtype=torch.float32), atol=1e-5, rtol=0)


@pytest.mark.parametrize("block", [1024, 7])
def test_near_pairs_is_the_thresholded_cosine_matrix_symmetric_with_its_row_sums(block, monkeypatch) -> None:
    monkeypatch.setattr(md, "BLOCK", block)
    _, residuals = _planted(d=6, n_dirs=2, per_dir=5, scatter=40, seed=2)  # low d: many pairs on either side of TAU
    u = torch.nn.functional.normalize(residuals.double(), dim=1)
    cos = u @ u.t()
    near, counts = md.near_pairs(md.unit_rows(residuals))
    clear = (cos - md.TAU).abs() > 1e-6  # float32 may round the other way at the threshold itself
    assert torch.equal(near[clear], (cos >= md.TAU)[clear]) and int((~clear).sum()) <= 2
    assert 0.1 < float(near.float().mean()) < 0.9
    assert torch.equal(near, near.t()) and torch.equal(counts, near.sum(1))


def _sae(d_in: int, d_sae: int, rows: torch.Tensor | None = None) -> JumpReLUSAE:
    torch.manual_seed(0)
    sae = JumpReLUSAE(SAEConfig(d_in=d_in, d_sae=d_sae))
    with torch.no_grad():
        sae.W_dec.normal_()
        if rows is not None:
            sae.W_dec[:len(rows)] = rows
    return sae


def _pool(residuals: torch.Tensor) -> ResidualPool:
    pool = ResidualPool()
    pool.residuals, pool.inputs = [residuals], [residuals + 0.1]
    return pool


def test_the_planted_directions_are_found_and_nothing_in_the_scatter() -> None:
    dirs, residuals = _planted()
    sae = _sae(48, 40)
    found, inputs = missing_directions(_pool(residuals), sae, torch.arange(0), limit=100)
    assert found.shape[0] == len(dirs)  # one per planted direction: the scattered residuals make none
    cos = (found @ dirs.t()).abs()
    assert bool((cos.max(1).values >= 0.97).all()) and sorted(cos.argmax(1).tolist()) == list(range(len(dirs)))
    # each comes with a pooled input of its own cluster (the seed's): its residual lies along the direction
    seed_residuals = inputs - 0.1
    assert bool(((seed_residuals / seed_residuals.norm(dim=1, keepdim=True)) * found).sum(1).ge(md.TAU).all())
    # the most novel first: a latent half along direction 0 makes it the least new of the six
    partly = 0.5 * dirs[0] + math.sqrt(0.75) * others_unit(dirs)
    sae = _sae(48, 4, partly.unsqueeze(0))  # few other rows, so that none of them takes much from any direction
    five = missing_directions(_pool(residuals), sae, torch.arange(0), limit=5)[0]
    assert sorted((five @ dirs.t()).abs().argmax(1).tolist()) == [1, 2, 3, 4, 5]


def test_a_direction_a_staying_latent_holds_is_not_missing_unless_that_latent_moves() -> None:
    dirs, residuals = _planted()
    others = torch.linalg.qr(torch.cat([dirs, torch.randn(3, 48, generator=torch.Generator().manual_seed(7))]).t())
    others = others[0].t()[len(dirs):]  # three unit directions orthogonal to the planted ones and to each other
    mix = others.sum(0) / math.sqrt(3)  # latents 1-3 hold them: a mixture of them is not new, though no one row
    held = dirs[2] + 0.2 * dirs[3]  # is within 0.58 of it; latent 0 holds planted direction 2 (nearly)
    sae = _sae(48, 40, torch.cat([held.unsqueeze(0), others]))
    g = torch.Generator().manual_seed(9)
    residuals = torch.cat([residuals, 1.3 * mix + 0.05 * torch.randn(12, 48, generator=g)])
    kept = missing_directions(_pool(residuals), sae, torch.arange(4, 40), limit=100)[0]
    assert sorted((kept @ dirs.t()).abs().argmax(1).tolist()) == [0, 1, 3, 4, 5]
    assert float((kept @ mix).abs().max()) < 0.5
    moving = missing_directions(_pool(residuals), sae, torch.arange(0, 40), limit=100)[0]  # every latent moves
    is_mix = (moving @ mix).abs() > 0.99  # the mixture is new again
    assert int(is_mix.sum()) == 1
    assert sorted((moving[~is_mix] @ dirs.t()).abs().argmax(1).tolist()) == [0, 1, 2, 3, 4, 5]


def test_support_counts_the_residuals_close_to_a_centre() -> None:
    g = torch.Generator().manual_seed(8)
    residuals, centres = torch.randn(300, 10, generator=g), torch.randn(8, 10, generator=g)
    centres = torch.nn.functional.normalize(centres)
    want = [sum(float(r @ c) / float(r.norm()) >= md.SUPPORT_COS for r in residuals.double()) for c in centres.double()]
    assert support(residuals, centres).tolist() == want and len(set(want)) > 2


def _novelty_brute(centre: torch.Tensor, rows: torch.Tensor, k: int) -> float:
    """Orthogonal matching pursuit by Gram-Schmidt in float64."""
    c, rows = centre.double(), rows.double()
    left, basis, picked = c.clone(), [], []
    for _ in range(k):
        j = max((i for i in range(len(rows)) if i not in picked), key=lambda i: abs(float(rows[i] @ left)))
        picked.append(j)
        v = rows[j].clone()
        for b in basis:
            v -= (v @ b) * b
        basis.append(v / v.norm())
        left = c - sum((c @ b) * b for b in basis)
    return float(left.norm())


def test_novelty_matches_matching_pursuit_by_gram_schmidt() -> None:
    g = torch.Generator().manual_seed(4)
    rows = torch.randn(30, 12, generator=g)
    rows = rows / rows.norm(dim=1, keepdim=True)
    centres = torch.randn(7, 12, generator=g)
    centres[0] = 0.6 * rows[3] - 0.8 * rows[11]  # in the span of two rows: nothing new
    centres = centres / centres.norm(dim=1, keepdim=True)
    got = novelty(centres, rows, 3)
    want = torch.tensor([_novelty_brute(c, rows, 3) for c in centres], dtype=torch.float32)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert float(got[0]) < 1e-4 and float(novelty(centres[:1], rows[:0]).item()) == 1.0


def test_match_is_greedy_by_cosine_as_a_brute_force() -> None:
    g = torch.Generator().manual_seed(5)
    for m, n in ((6, 9), (9, 6), (5, 5)):
        rows = torch.nn.functional.normalize(torch.randn(m, 10, generator=g), dim=1)
        dirs = torch.nn.functional.normalize(torch.randn(n, 10, generator=g), dim=1)
        sim = (rows @ dirs.t()).double()
        want = {}
        while len(want) < min(m, n):  # the highest cosine among the rows and directions still free, repeatedly
            k, j = max(((k, j) for k in range(m) for j in range(n) if k not in want and j not in want.values()),
                       key=lambda p: sim[p])
            want[k] = j
        ks, js = match(rows, dirs)
        assert dict(zip(ks.tolist(), js.tolist(), strict=True)) == want


def test_pools_at_matches_the_checks() -> None:
    for every, first, end in ((8, 21, 70), (64, 205, 819), (3, 0, 40)):
        checks = [s for s in range(end + 100) if (s + 1) % every == 0 and first <= s < end]
        for step in range(end + 100):
            upcoming = [s for s in checks if s >= step]
            assert pools_at(step, every, first, end) == (bool(upcoming) and upcoming[0] - step < md.POOL_STEPS)


def test_the_pool_keeps_the_largest_residuals_of_the_last_steps_and_round_trips() -> None:
    pool = ResidualPool()
    g = torch.Generator().manual_seed(6)
    batches = [torch.randn(md.POOL_TOP + 40, 5, generator=g) for _ in range(md.POOL_STEPS + 3)]
    for x in batches:
        pool.add(x, torch.zeros_like(x))
    assert len(pool.residuals) == md.POOL_STEPS
    for got, x in zip(pool.residuals, batches[3:], strict=True):
        norms = x.pow(2).sum(1)
        assert got.shape[0] == md.POOL_TOP and float(got.pow(2).sum(1).min()) >= float(norms.sort().values[40])
    other = ResidualPool()
    other.load(pool.tensors(), "cpu")
    assert all(torch.equal(a, b) for a, b in zip(other.residuals + other.inputs, pool.residuals + pool.inputs,
                                                 strict=True))
    other.load({}, "cpu")
    assert other.residuals == [] and pool.tensors() != {} and ResidualPool().tensors() == {}


@pytest.mark.parametrize("limit", [0, -1])
def test_no_room_means_no_directions(limit) -> None:
    _, residuals = _planted()
    assert missing_directions(_pool(residuals), _sae(48, 40), torch.arange(0), limit)[0].shape[0] == 0
