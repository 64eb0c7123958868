"""benchmarks/polish.py: matching pursuit against exact codes and least squares, and the dictionary polish against
a planted dictionary it starts near."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("scipy", reason="benchmarks/synthetic_metrics.py needs scipy (installed with the interop extra)")

from benchmarks.polish import max_cos, omp, polish, run_one


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


def test_omp_picks_what_the_residual_form_picks_chunk_by_chunk() -> None:
    # the reference: matching pursuit written from its definition, correlations read off the residual itself
    g = torch.Generator().manual_seed(5)
    rows = torch.nn.functional.normalize(torch.randn(96, 24, generator=g, dtype=torch.float64), dim=1)
    x = torch.randn(300, 24, generator=g, dtype=torch.float64)
    residual, support = x.clone(), [[] for _ in range(x.shape[0])]
    for _ in range(5):
        for i in range(x.shape[0]):
            corr = rows @ residual[i]
            corr[support[i]] = float("-inf")
            support[i].append(int(corr.argmax()))
            coef = torch.linalg.lstsq(rows[support[i]].T, x[i]).solution
            residual[i] = x[i] - coef @ rows[support[i]]
    codes, found = omp(x, rows, 5, ridge=0.0, chunk=64)  # several chunks, the last one short
    assert all(set(codes[i].nonzero().squeeze(1).tolist()) == set(support[i]) for i in range(x.shape[0]))
    assert torch.allclose(found, residual, atol=1e-9)


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
    rows = polish(start, x, k=3, epochs=3, batch=2048, seed=0, block=block)
    assert before < 0.97
    assert max_cos(truth, rows) > 0.999  # ground truth, not the polish's own loss
    assert torch.allclose(rows.norm(dim=1), torch.ones(48, dtype=torch.float64))


def test_run_one_scores_the_default_and_the_held_sae(monkeypatch) -> None:
    from benchmarks import polish as mod
    from benchmarks.synthetic_data import SynthConfig

    monkeypatch.setitem(mod.SETTINGS, "tiny", SynthConfig(d=16, ratio=2.0, l0=3.0))
    out = run_one("tiny", seed=0, d=16, epochs=1, tokens=8192, batch=1024)
    assert set(out) >= {"default", "polished_rows", "held"}
    for side in ("default", "held"):
        assert 0.0 <= out[side]["max_cos"] <= 1.0 and out[side]["fvu"] >= 0.0
    # the held SAE's decoder is the polished rows, so both read the same max-|cos|
    assert out["held"]["max_cos"] == pytest.approx(out["polished_rows"]["max_cos"], abs=1e-5)


def test_run_one_with_a_cone_trains_the_rows_near_the_polished_ones(monkeypatch) -> None:
    from benchmarks import polish as mod
    from benchmarks.synthetic_data import SynthConfig

    monkeypatch.setitem(mod.SETTINGS, "tiny", SynthConfig(d=16, ratio=2.0, l0=3.0))
    out = run_one("tiny", seed=0, d=16, epochs=1, tokens=8192, batch=1024, cone=0.99)
    assert "cone" in out and "held" not in out
    assert out["cone_rows"]["min_cos_to_polished"] > 0.99 - 1e-5  # within the cone
    assert out["cone_rows"]["mean_cos_to_polished"] < 1 - 1e-4  # but trained: not held


def test_run_one_reads_both_saes_at_saelens_l0(monkeypatch) -> None:
    pytest.importorskip("sae_lens", reason="--saelens needs sae-lens (the interop extra)")
    from benchmarks import polish as mod
    from benchmarks.synthetic_data import SynthConfig

    monkeypatch.setitem(mod.SETTINGS, "tiny", SynthConfig(d=16, ratio=2.0, l0=3.0))
    out = run_one("tiny", seed=0, d=16, epochs=1, tokens=8192, batch=1024, saelens=True)
    target = out["saelens"]["l0"]
    for side in ("default", "held"):
        read = out[f"{side}_at_saelens_l0"]
        assert read["l0"] <= target + 1e-6  # at_l0: the largest L0 at or under SAELens's
        assert read["max_cos"] == pytest.approx(out[side]["max_cos"])  # same dictionary, other θ


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_duplicate_rows_restart_only_within_the_restart_share(share) -> None:
    g = torch.Generator().manual_seed(3)
    truth = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))[0].T[:8]  # 8 orthonormal rows
    x = _sparse_codes(4096, 8, 2, g) @ truth
    start = torch.cat([truth, truth[:1]])  # row 8 duplicates row 0: matching pursuit never picks it
    rows = polish(start, x, k=2, epochs=1, batch=1024, restart_share=share)
    duplicate = (rows[8] @ rows[0]).abs().item()
    assert duplicate > 0.999 if share == 0.0 else duplicate < 0.9
