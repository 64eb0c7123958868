"""Collapsed latents (app/training/resample.py, --collapse-share): the latents picked are those a per-latent
brute force of ‖W_enc,i‖·‖W_dec,i‖ against the median picks, the pick ignores how a latent's gain is split between
its encoder and its decoder, and a resample moves collapsed latents onto the missing directions of a planted pool,
one per direction, the nearest first, and nothing else. A run with the option on (logs, resume bit
for bit, refused values) is tested beside the split check's in test_resample.py."""

from __future__ import annotations

import pytest
import torch

from app.sae import JumpReLUSAE, SAEConfig
from app.training.config import TrainConfig
from app.training.distributed import init_distributed
from app.training.missing_directions import ResidualPool
from app.training.optim import ThresholdAdam
from app.training.resample import collapsed_latents, resample_collapsed
from tests.training.gains import gain_brute


def _sae(d_in: int = 6, d_sae: int = 10) -> tuple[JumpReLUSAE, ThresholdAdam]:
    torch.manual_seed(0)
    sae = JumpReLUSAE(SAEConfig(d_in=d_in, d_sae=d_sae))
    sae.use_linear_threshold()
    with torch.no_grad():
        sae.W_enc.normal_()
        sae.W_dec.normal_()
        sae.linear_threshold.fill_(0.05)
    opt = ThresholdAdam([{"params": [sae.W_enc, sae.W_dec]}, {"params": [sae.b_enc, sae.b_dec]},
                         {"params": [sae.threshold_parameter]}], lr=1e-2)
    sae(torch.randn(32, d_in), 0.1).loss.backward()
    opt.step()
    return sae, opt


@pytest.mark.parametrize("share", [0.05, 0.33, 0.6, 0.99])
def test_collapsed_latents_match_a_brute_force(share) -> None:
    sae, _ = _sae()
    with torch.no_grad():
        sae.W_enc[:, 2] *= 0.1  # a short encoder column
        sae.W_dec[7] *= 0.05  # a short decoder row (a free decoder's collapse)
        sae.W_enc[:, 4] *= 0.5
    inside, outside = gain_brute(sae, share)
    picked = set(collapsed_latents(sae, share).tolist())
    assert inside <= picked and not picked & outside and len(inside) + len(outside) == sae.d_sae
    assert {2, 7} <= set(collapsed_latents(sae, 0.33).tolist())


def test_the_pick_ignores_how_the_gain_is_split_between_encoder_and_decoder() -> None:
    """The SAE computes the same x̂ when latent i's encoder column is scaled by c and its decoder row by 1/c (θ_i
    and b_enc,i by c); such a latent is neither more nor less collapsed."""
    sae, _ = _sae()
    with torch.no_grad():
        sae.W_dec[5] *= 0.1
    before = collapsed_latents(sae, 0.33).tolist()
    x = torch.randn(50, 6)
    with torch.no_grad():
        x_hat = sae.decode(sae.encode(x))
        for i, c in ((5, 8.0), (1, 0.125)):  # latent 5 regains its encoder's length, latent 1 loses it
            sae.W_enc[:, i] *= c
            sae.b_enc[i] *= c
            sae.linear_threshold[i] *= c
            sae.W_dec[i] /= c
        torch.testing.assert_close(sae.decode(sae.encode(x)), x_hat)
    assert 5 in before
    assert collapsed_latents(sae, 0.33).tolist() == before


def _pool_along(directions: torch.Tensor, per_dir: int = 10, seed: int = 1) -> ResidualPool:
    """A pool whose residuals point along `directions` (plus a little noise), `per_dir` each, inputs beside them."""
    g = torch.Generator().manual_seed(seed)
    rows = [d * (1.0 + torch.rand(per_dir, 1, generator=g)) + 0.05 * torch.randn(per_dir, d.shape[0], generator=g)
            for d in directions]
    pool = ResidualPool()
    pool.residuals = [torch.cat(rows)]
    pool.inputs = [pool.residuals[0] + 0.2]
    return pool


def test_resample_collapsed_moves_collapsed_latents_onto_the_missing_directions() -> None:
    sae, opt = _sae(d_in=12, d_sae=10)
    with torch.no_grad():
        for i in (3, 8, 9):
            sae.W_dec[i] *= 0.05
    picked = collapsed_latents(sae, 0.33).tolist()
    assert picked == [3, 8, 9]
    g = torch.Generator().manual_seed(2)
    staying = torch.nn.functional.normalize(sae.W_dec.detach()[[i for i in range(10) if i not in picked]], dim=1)
    missing = torch.randn(2, 12, generator=g)  # two directions no staying latent is near
    missing = missing - (missing @ staying.t()) @ torch.linalg.pinv(staying.t())
    missing = torch.nn.functional.normalize(missing, dim=1)
    with torch.no_grad():  # latent 8 is already nearer missing direction 1 than latents 3 and 9 are to either
        sae.W_dec[8] = 0.05 * torch.nn.functional.normalize(missing[1] + 0.5 * staying[0], dim=0)
    before = {k: v.detach().clone() for k, v in sae.state_dict().items()}
    dist = init_distributed("cpu")
    try:
        n = resample_collapsed(sae, opt, _pool_along(missing), 0.33, dist=dist)
    finally:
        dist.close()
    assert n == 2  # two directions for three collapsed latents: one stays as it was
    moved = [i for i in picked if not torch.equal(sae.W_dec[i], before["W_dec"][i])]
    assert len(moved) == 2 and 8 in moved
    others = [i for i in range(sae.d_sae) if i not in moved]
    assert torch.equal(sae.W_dec[others], before["W_dec"][others])
    assert torch.equal(sae.W_enc[:, others], before["W_enc"][:, others])
    unit = torch.nn.functional.normalize(sae.W_dec.detach()[moved], dim=1)
    cos = unit @ missing.t()
    assert float(cos[moved.index(8), 1]) > 0.99 and float(cos.max(1).values.min()) > 0.99  # 8 took direction 1
    enc = torch.nn.functional.cosine_similarity(sae.W_dec[moved], sae.W_enc[:, moved].t(), dim=1)
    torch.testing.assert_close(enc, torch.ones(2))
    assert set(collapsed_latents(sae, 0.33).tolist()) == set(picked) - set(moved)  # the others' mean norm again


def test_no_missing_direction_moves_nothing() -> None:
    sae, opt = _sae(d_in=12, d_sae=10)
    with torch.no_grad():
        sae.W_dec[3] *= 0.05
    before = sae.W_dec.detach().clone()
    held = torch.nn.functional.normalize(sae.W_dec.detach()[[0, 1]], dim=1)  # residuals along latents 0 and 1
    dist = init_distributed("cpu")
    try:
        assert resample_collapsed(sae, opt, _pool_along(held), 0.33, dist=dist) == 0
        assert resample_collapsed(sae, opt, ResidualPool(), 0.33, dist=dist) == 0  # nothing pooled
    finally:
        dist.close()
    assert torch.equal(sae.W_dec.detach(), before)


def test_the_default_moves_the_latents_under_a_third_of_the_median_gain() -> None:
    base = {"activations": "a.safetensors", "out": "o", "d_sae": 8, "tokens": 4096}
    assert TrainConfig(**base).collapse_share == 0.33  # docs/training.md, thirty-second pass
