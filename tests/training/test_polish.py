"""app/training/polish.py: matching pursuit against exact codes and LAPACK's least squares, the dictionary polish
against a planted dictionary it starts near, and the cone against a brute-force search of its edge."""

from __future__ import annotations

import pytest
import torch

from app.training.polish import SCREEN_ABOVE, _accumulate, into_cone, omp, polish_rows, screen_for, sparse_omp


def max_cos(truth: torch.Tensor, rows: torch.Tensor) -> float:
    """Mean over planted rows of the best row's |cos|."""
    unit = torch.nn.functional.normalize
    return (unit(truth, dim=1) @ unit(rows, dim=1).T).abs().max(dim=1).values.mean().item()

def _sparse_codes(n: int, n_rows: int, k: int, g: torch.Generator) -> torch.Tensor:
    support = torch.rand(n, n_rows, generator=g).argsort(dim=1)[:, :k]
    return torch.zeros(n, n_rows, dtype=torch.float64).scatter_(
        1, support, 0.5 + torch.rand(n, k, generator=g, dtype=torch.float64))


def test_omp_recovers_exact_codes_on_an_orthonormal_dictionary() -> None:
    g = torch.Generator().manual_seed(0)
    rows = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))[0].T  # orthonormal rows
    codes = _sparse_codes(256, 12, 3, g)
    found, residual = omp(codes @ rows, rows, 3, ridge=0.0)
    assert torch.allclose(found, codes, atol=1e-10)
    assert residual.abs().max() < 1e-10


def test_omp_codes_are_the_least_squares_fit_on_their_support() -> None:
    g = torch.Generator().manual_seed(1)
    rows = torch.randn(40, 10, generator=g, dtype=torch.float64)
    rows /= rows.norm(dim=1, keepdim=True)
    x = torch.randn(64, 10, generator=g, dtype=torch.float64)
    codes, residual = omp(x, rows, 4, ridge=0.0)
    assert ((codes != 0).sum(dim=1) == 4).all()
    for i in range(x.shape[0]):
        support = codes[i].nonzero().squeeze(1)
        ref = torch.linalg.lstsq(rows[support].T, x[i]).solution  # the reference: LAPACK's least squares
        assert torch.allclose(codes[i, support], ref, atol=1e-9)
        assert torch.allclose(residual[i], x[i] - ref @ rows[support], atol=1e-9)
    # the first pick is the row most correlated with the token, as brute force over all rows finds it
    first = (x @ rows.T).argmax(dim=1)
    assert all(codes[i, first[i]] != 0 for i in range(x.shape[0]))


def _pursuit_by_definition(x: torch.Tensor, rows: torch.Tensor, k: int, pools: list[list[int]]):
    """Matching pursuit written from its definition, token by token, each token choosing among its own rows."""
    residual, support = x.clone(), [[] for _ in range(x.shape[0])]
    for _ in range(k):
        for i in range(x.shape[0]):
            corr = torch.full((rows.shape[0],), float("-inf"), dtype=x.dtype)
            corr[pools[i]] = rows[pools[i]] @ residual[i]
            corr[support[i]] = float("-inf")
            support[i].append(int(corr.argmax()))
            coef = torch.linalg.lstsq(rows[support[i]].T, x[i]).solution
            residual[i] = x[i] - coef @ rows[support[i]]
    return support, residual


def test_omp_picks_what_the_residual_form_picks_chunk_by_chunk() -> None:
    # the reference: matching pursuit written from its definition, correlations read off the residual itself
    g = torch.Generator().manual_seed(5)
    rows = torch.nn.functional.normalize(torch.randn(96, 24, generator=g, dtype=torch.float64), dim=1)
    x = torch.randn(300, 24, generator=g, dtype=torch.float64)
    support, residual = _pursuit_by_definition(x, rows, 5, [list(range(96))] * x.shape[0])
    codes, found = omp(x, rows, 5, ridge=0.0, chunk=64)  # several chunks, the last one short
    assert all(set(codes[i].nonzero().squeeze(1).tolist()) == set(support[i]) for i in range(x.shape[0]))
    assert torch.allclose(found, residual, atol=1e-9)


def test_screened_omp_picks_among_each_tokens_most_correlated_rows() -> None:
    # the reference: pursuit by definition restricted to each token's `screen` rows of largest x·row, by brute force
    g = torch.Generator().manual_seed(6)
    rows = torch.nn.functional.normalize(torch.randn(120, 20, generator=g, dtype=torch.float64), dim=1)
    x = torch.randn(200, 20, generator=g, dtype=torch.float64)
    pools = [sorted(range(120), key=lambda j: -float(rows[j] @ x[i]))[:24] for i in range(x.shape[0])]
    support, residual = _pursuit_by_definition(x, rows, 4, pools)
    index, value, found = sparse_omp(x, rows, 4, ridge=0.0, chunk=64, screen=24)
    assert all(set(index[i].tolist()) == set(support[i]) for i in range(x.shape[0]))
    assert torch.allclose(found, residual, atol=1e-9)
    codes, dense_residual = omp(x, rows, 4, ridge=0.0, chunk=64, screen=24)  # the dense form of the same codes
    assert torch.equal(codes.gather(1, index), value) and ((codes != 0).sum(dim=1) == 4).all()
    assert torch.allclose(dense_residual, found, atol=1e-12)
    # a screen as wide as the dictionary is no screen
    whole = omp(x, rows, 4, ridge=0.0, screen=120)
    assert torch.equal(whole[0], omp(x, rows, 4, ridge=0.0)[0])
    with pytest.raises(ValueError, match="screen must keep"):
        sparse_omp(x, rows, 4, screen=3)


def test_the_trainer_screens_only_large_dictionaries() -> None:
    assert screen_for(SCREEN_ABOVE, 8) is None
    assert screen_for(4096, 32) == 256
    assert screen_for(SCREEN_ABOVE + 1, 500) == 4000  # wider than the dictionary: sparse_omp then searches it whole


def test_the_sparse_statistics_equal_the_dense_products() -> None:
    g = torch.Generator().manual_seed(7)
    rows = torch.nn.functional.normalize(torch.randn(50, 8, generator=g, dtype=torch.float64), dim=1)
    x = torch.randn(300, 8, generator=g, dtype=torch.float64)
    index, value, _ = sparse_omp(x, rows, 3)
    codes = torch.zeros(300, 50, dtype=torch.float64).scatter_(1, index, value)
    a0, b0 = torch.rand(50, 50, generator=g, dtype=torch.float64), torch.rand(50, 8, generator=g, dtype=torch.float64)
    a, b = a0.clone(), b0.clone()
    _accumulate(a, b, index, value, x, forget=0.9, scale=1 / 300, chunk=128)
    assert torch.allclose(a, 0.9 * a0 + codes.T @ codes / 300, atol=1e-12)
    assert torch.allclose(b, 0.9 * b0 + codes.T @ x / 300, atol=1e-12)


def test_omp_rejects_an_impossible_k() -> None:
    with pytest.raises(ValueError, match="k must be"):
        omp(torch.zeros(2, 3), torch.eye(3), 4)


@pytest.mark.parametrize("block", [1, 8])
def test_polish_moves_a_perturbed_dictionary_onto_the_planted_one(block: int) -> None:
    g = torch.Generator().manual_seed(2)
    truth = torch.randn(48, 24, generator=g, dtype=torch.float64)
    truth /= truth.norm(dim=1, keepdim=True)
    x = _sparse_codes(16_384, 48, 3, g) @ truth
    start = truth + 0.08 * torch.randn(48, 24, generator=g, dtype=torch.float64)
    before = max_cos(truth, start)
    rows = polish_rows(start, x, k=3, epochs=3, batch=2048, seed=0, block=block)
    assert before < 0.97
    assert max_cos(truth, rows) > 0.999  # ground truth, not the polish's own loss
    assert torch.allclose(rows.norm(dim=1), torch.ones(48, dtype=torch.float64))


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_duplicate_rows_restart_only_within_the_restart_share(share) -> None:
    g = torch.Generator().manual_seed(3)
    truth = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))[0].T[:8]  # 8 orthonormal rows
    x = _sparse_codes(4096, 8, 2, g) @ truth
    start = torch.cat([truth, truth[:1]])  # row 8 duplicates row 0: matching pursuit never picks it
    rows = polish_rows(start, x, k=2, epochs=1, batch=1024, restart_share=share)
    duplicate = (rows[8] @ rows[0]).abs().item()
    assert duplicate > 0.999 if share == 0.0 else duplicate < 0.9


def test_into_cone_moves_outside_rows_to_the_nearest_point_of_the_cone_and_leaves_the_rest() -> None:
    g = torch.Generator().manual_seed(4)
    centre = torch.nn.functional.normalize(torch.randn(64, 8, generator=g, dtype=torch.float64), dim=1)
    w = torch.randn(64, 8, generator=g, dtype=torch.float64) * 3.0
    w[:8] = centre[:8] * 2.0 + 0.01 * w[:8]  # some rows start inside the cone
    before, cos = w.clone(), 0.9
    into_cone(w, centre, cos)
    unit_before = torch.nn.functional.normalize(before, dim=1)
    inside = (unit_before * centre).sum(1) >= cos
    assert inside.sum() >= 8 and (~inside).sum() >= 40
    assert torch.equal(w[inside], before[inside])
    assert torch.allclose(w.norm(dim=1), before.norm(dim=1))
    unit = torch.nn.functional.normalize(w, dim=1)
    assert torch.allclose((unit[~inside] * centre[~inside]).sum(1), torch.full(((~inside).sum(),), cos,
                                                                             dtype=torch.float64))
    # the reference: brute force over many points on the cone's edge; none is nearer the row than the one chosen
    for i in torch.nonzero(~inside).squeeze(1)[:10].tolist():
        side = torch.randn(20_000, 8, generator=g, dtype=torch.float64)
        side -= (side @ centre[i]).unsqueeze(1) * centre[i]
        edge = cos * centre[i] + (1 - cos**2) ** 0.5 * torch.nn.functional.normalize(side, dim=1)
        assert (edge @ unit_before[i]).max() <= (unit[i] @ unit_before[i]) + 1e-12


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_omp_and_the_polish_on_cuda_match_the_cpu() -> None:
    g = torch.Generator().manual_seed(7)
    rows = torch.nn.functional.normalize(torch.randn(64, 16, generator=g, dtype=torch.float64), dim=1)
    x = torch.randn(2048, 16, generator=g, dtype=torch.float64)
    codes, residual = omp(x, rows, 4)
    codes_gpu, residual_gpu = omp(x.cuda(), rows.cuda(), 4)
    assert torch.allclose(codes_gpu.cpu(), codes, atol=1e-9) and torch.allclose(residual_gpu.cpu(), residual, atol=1e-9)
    screened, screened_gpu = omp(x, rows, 4, screen=16)[0], omp(x.cuda(), rows.cuda(), 4, screen=16)[0]
    assert torch.allclose(screened_gpu.cpu(), screened, atol=1e-9)
    polished = polish_rows(rows, x, 4, epochs=1, batch=512, seed=0)
    polished_gpu = polish_rows(rows.cuda(), x.cuda(), 4, epochs=1, batch=512, seed=0)
    assert polished_gpu.is_cuda and torch.allclose(polished_gpu.cpu(), polished, atol=1e-7)
