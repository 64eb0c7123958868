"""Collapsed latents (app/training/resample.py, --collapse-share): the latents picked are those a per-latent
brute force of ‖W_enc,i‖·‖W_dec,i‖ against the median picks, the pick ignores how a latent's gain is split between
its encoder and its decoder, and a resample moves exactly those latents. A run with the option on (logs, resume bit
for bit, refused values) is tested beside the split check's in test_resample.py."""

from __future__ import annotations

import pytest
import torch

from app.sae import JumpReLUSAE, SAEConfig
from app.training.config import TrainConfig
from app.training.distributed import init_distributed
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


def test_resample_collapsed_moves_exactly_the_collapsed_latents() -> None:
    sae, opt = _sae()
    with torch.no_grad():
        sae.W_dec[3] *= 0.05
        sae.W_enc[:, 8] *= 0.05
    picked = collapsed_latents(sae, 0.33).tolist()
    assert {3, 8} <= set(picked)
    before = {k: v.detach().clone() for k, v in sae.state_dict().items()}
    x = torch.randn(300, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        x_hat = sae.decode(sae.encode(x))
    dist = init_distributed("cpu")
    try:
        n = resample_collapsed(sae, opt, x, x_hat, 0.33, seed=3, dist=dist)
    finally:
        dist.close()
    assert n == len(picked)
    others = [i for i in range(sae.d_sae) if i not in picked]
    assert torch.equal(sae.W_dec[others], before["W_dec"][others])
    assert torch.equal(sae.W_enc[:, others], before["W_enc"][:, others])
    errors = x - x_hat
    for i in picked:  # each now points along the residual of some token of the batch, encoder and decoder alike
        cos = torch.nn.functional.cosine_similarity(sae.W_dec[i].detach().unsqueeze(0), errors, dim=1)
        torch.testing.assert_close(cos.max(), torch.tensor(1.0))
        enc = torch.nn.functional.cosine_similarity(sae.W_dec[i], sae.W_enc[:, i], dim=0)
        torch.testing.assert_close(enc, torch.tensor(1.0))
    assert collapsed_latents(sae, 0.33).numel() < len(picked)  # at the others' mean encoder norm again


def test_the_default_is_off() -> None:
    base = {"activations": "a.safetensors", "out": "o", "d_sae": 8, "tokens": 4096}
    assert TrainConfig(**base).collapse_share == 0.0
