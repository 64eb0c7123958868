"""Loss effects (app/index/loss_effects.py) equal the one-example-at-a-time brute force of SPEC §4."""

from __future__ import annotations

import pytest
import torch

from app.index.activations import fetch_rows
from app.index.examples import TOP, ExampleSet
from app.index.loss_effects import loss_effects
from app.lm.hooks import capture
from tests.index._index_brute import HOOK, brute_loss_effects


def _examples(sae, n_rows: int, ctx: int) -> ExampleSet:
    """Windows that stress the grouping: one latent twice in a row, several latents per row, windows clipped
    at the row start (centre 0 and 1) and end, and a latent alone in its row."""
    lat = [3, 3, 5, 7, 5, 3, 11, 2, 9, 9]
    pos = [0 * ctx + 2, 0 * ctx + 20, 0 * ctx + 20, 0 * ctx + ctx - 1, 1 * ctx + 1, 1 * ctx + 30,
           2 * ctx + 0, (n_rows - 1) * ctx + 16, 0 * ctx + 9, 2 * ctx + 9]
    lat = torch.tensor(lat) % sae.d_sae
    n = lat.numel()
    return ExampleSet(lat, torch.tensor(pos), torch.full((n,), TOP), torch.arange(n), torch.ones(n))


def _calibrated(lm, d_sae: int, rows: torch.Tensor):
    """A random SAE on HOOK whose latents fire on 5–30 % of tokens (so ablations change something)."""
    from app.sae import JumpReLUSAE

    sae = JumpReLUSAE.create(lm.d_model, d_sae, seed=1, metadata={"hook_name": "blocks.1.hook_resid_post"})
    h = capture(lm, rows, None, *HOOK)[:, 1:].reshape(-1, lm.d_model)
    with torch.no_grad():
        pre = sae.pre_acts(h)
        q = torch.linspace(0.70, 0.95, d_sae)
        sae.log_threshold.copy_(torch.stack([pre[:, i].quantile(q[i]) for i in range(d_sae)]).clamp_min(1e-3).log())
    return sae


def _check(lm, sae, corpus_file, cfg, **kw):
    rows = fetch_rows(lm, corpus_file, cfg.context_size, range(4))
    ex = _examples(sae, 4, cfg.context_size)
    got = loss_effects(lm, sae, HOOK, rows, ex, cfg, **kw)
    want = brute_loss_effects(lm, sae, HOOK, rows, ex.latent, ex.pos, cfg)
    assert torch.equal(got.isnan(), want.isnan())
    assert want.nan_to_num().abs().max() > 1e-3  # the ablations do change the loss
    torch.testing.assert_close(got.nan_to_num(), want.nan_to_num(), rtol=1e-3, atol=2e-5)


def test_loss_effects_equal_the_brute_force(tiny_lm, tiny_sae, corpus_file, index_cfg):
    _check(tiny_lm, tiny_sae, corpus_file, index_cfg)


def test_loss_effects_equal_the_brute_force_one_latent_per_forward(tiny_lm, tiny_sae, corpus_file, index_cfg):
    """A logit budget of one window per forward: every (row, latent) runs alone; same answer."""
    _check(tiny_lm, tiny_sae, corpus_file, index_cfg, logit_budget=1)


@pytest.mark.parametrize("family", ["gpt2", "gemma2"])  # learned positions; soft-capped logits
def test_loss_effects_equal_the_brute_force_other_families(family, tiny_model_dir, corpus_file, index_cfg):
    from app.lm import load_lm

    lm = load_lm(tiny_model_dir(family), device="cpu")
    rows = fetch_rows(lm, corpus_file, index_cfg.context_size, range(4))
    sae = _calibrated(lm, 16, torch.tensor([rows[r] for r in range(4)]))
    _check(lm, sae, corpus_file, index_cfg)


def test_progress_counts_every_example(tiny_lm, tiny_sae, corpus_file, index_cfg):
    rows = fetch_rows(tiny_lm, corpus_file, index_cfg.context_size, range(4))
    ex = _examples(tiny_sae, 4, index_cfg.context_size)
    seen: list[int] = []
    loss_effects(tiny_lm, tiny_sae, HOOK, rows, ex, index_cfg, on_progress=seen.append)
    assert sum(seen) == ex.latent.numel() and len(seen) >= 3  # at least one forward per row


def test_loss_effects_on_a_short_last_row(tiny_lm, tiny_sae, corpus_file, index_cfg):
    """The corpus's last row may be shorter than context_size: windows past its end are NaN, the rest exact."""
    rows = fetch_rows(tiny_lm, corpus_file, index_cfg.context_size, range(2))
    rows[1] = rows[1][:10]
    ctx = index_cfg.context_size
    ex = ExampleSet(torch.tensor([3, 5, 3]), torch.tensor([ctx + 8, ctx + 9, 12]), torch.full((3,), TOP),
                    torch.arange(3), torch.ones(3))
    got = loss_effects(tiny_lm, tiny_sae, HOOK, rows, ex, index_cfg)
    want = brute_loss_effects(tiny_lm, tiny_sae, HOOK, rows, ex.latent, ex.pos, index_cfg)
    assert got[0].isnan().any() and not got[0, :2].isnan().any()  # positions 10, 11 lie past the row's end
    torch.testing.assert_close(got.nan_to_num(), want.nan_to_num(), rtol=1e-3, atol=2e-5)


def test_loss_effects_of_one_window_clipped_at_the_row_start(tiny_lm, tiny_sae, corpus_file, index_cfg):
    """A row whose only window starts at token 0: its padding columns lie past the forward's end (a lazy view
    computes one latent at a time, so this is common there)."""
    rows = fetch_rows(tiny_lm, corpus_file, index_cfg.context_size, range(1))
    ex = ExampleSet(torch.tensor([3]), torch.tensor([1]), torch.full((1,), TOP), torch.zeros(1, dtype=torch.long),
                    torch.ones(1))
    got = loss_effects(tiny_lm, tiny_sae, HOOK, rows, ex, index_cfg)
    want = brute_loss_effects(tiny_lm, tiny_sae, HOOK, rows, ex.latent, ex.pos, index_cfg)
    assert torch.equal(got.isnan(), want.isnan()) and got.isnan().any()
    torch.testing.assert_close(got.nan_to_num(), want.nan_to_num(), rtol=1e-3, atol=2e-5)
