"""Steering math (SPEC §4): clamp keeps the SAE error term, add uses the unit direction, ablate = clamp 0,
interventions combine, BOS is never edited."""

from __future__ import annotations

import pytest
import torch

from app.lm.hooks import capture, intervene
from app.sae import UnknownLatent
from app.steering import Intervention, apply_interventions, check_interventions, steering_hook
from tests.steering.helpers import make_sae


@pytest.fixture
def sae():
    return make_sae(16, 32, seed=3)


@pytest.fixture
def h():
    return torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(0)) * 2


def test_clamp_pins_latent_in_reconstruction_and_keeps_error_term(sae, h):
    i, c = 7, 3.5
    out = apply_interventions(h, sae, [Intervention(i, "clamp", c)])
    f = sae.encode(h).detach()
    f_pinned = f.clone()
    f_pinned[..., i] = c
    err_before = h - sae.decode(f).detach()
    err_after = out - sae.decode(f_pinned).detach()
    torch.testing.assert_close(err_after, err_before, atol=1e-5, rtol=1e-5)
    # And the edit is exactly (c − f_i)·d_i.
    expected = h + (c - f[..., i:i + 1]) * sae.W_dec[i].detach()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_clamp_with_orthonormal_decoder_re_encodes_to_c():
    d = 16
    sae = make_sae(d, 8, seed=1, threshold=1e-4)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(2)))
    with torch.no_grad():
        sae.W_dec.copy_(q[:8])
        sae.W_enc.copy_(q[:8].T)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    x = q[:8].sum(0, keepdim=True) * 0.5  # every latent pre = 0.5 > θ
    out = apply_interventions(x, sae, [Intervention(2, "clamp", 4.0)])
    f = sae.encode(out).detach()[0]
    assert f[2].item() == pytest.approx(4.0, abs=1e-5)
    assert torch.allclose(f[torch.arange(8) != 2], torch.full((7,), 0.5), atol=1e-5)


def test_add_uses_unit_decoder_direction(sae, h):
    i, s = 4, 2.0
    out = apply_interventions(h, sae, [Intervention(i, "add", s)])
    d = sae.W_dec[i].detach()
    assert d.norm().item() != pytest.approx(1.0, abs=1e-3)  # the fixture's rows are not unit
    torch.testing.assert_close(out - h, (s * d / d.norm()).expand_as(h), atol=1e-5, rtol=1e-5)
    assert (out - h).norm(dim=-1).allclose(torch.full((2, 5), s), atol=1e-4)


def test_ablate_equals_clamp_to_zero(sae, h):
    a = apply_interventions(h, sae, [Intervention(5, "ablate", 123.0)])
    b = apply_interventions(h, sae, [Intervention(5, "clamp", 0.0)])
    torch.testing.assert_close(a, b)
    active = sae.encode(h)[..., 5] > 0
    assert active.any(), "fixture should make latent 5 fire somewhere"
    changed = (a - h).abs().sum(-1) > 1e-6
    assert torch.equal(changed, active)  # an inactive latent is already 0: nothing to remove


def test_combined_interventions_add_up(sae, h):
    ivs = [Intervention(1, "clamp", 2.0), Intervention(3, "add", -1.5), Intervention(9, "ablate")]
    both = apply_interventions(h, sae, ivs)
    separate = h + sum(apply_interventions(h, sae, [iv]) - h for iv in ivs)
    torch.testing.assert_close(both, separate, atol=1e-5, rtol=1e-5)


def test_hook_never_touches_bos_position(sae, h):
    fn = steering_hook(sae, [Intervention(0, "add", 5.0)], protect_prefix=1)
    out = fn(h, 0)
    assert torch.equal(out[:, 0], h[:, 0])
    assert not torch.allclose(out[:, 1:], h[:, 1:])
    later = fn(h[:, :1], 7)  # a generated token (KV cache offset 7) is steered
    assert not torch.allclose(later, h[:, :1])


def test_hook_edits_only_chosen_rows(sae, h):
    out = steering_hook(sae, [Intervention(0, "add", 5.0)], rows=slice(1, 2))(h, 0)
    assert torch.equal(out[0], h[0]) and not torch.equal(out[1, 1:], h[1, 1:])


def test_bos_untouched_through_the_model(tiny_lm, tiny_sae):
    ids = torch.tensor([tiny_lm.token_ids("The red fox jumps")])
    clean = capture(tiny_lm, ids, None, "resid_post", 2)
    fn = steering_hook(tiny_sae, [Intervention(3, "add", 50.0)], protect_prefix=1)
    with intervene(tiny_lm, "resid_post", 1, fn):
        steered = capture(tiny_lm, ids, None, "resid_post", 2)
    assert torch.allclose(steered[0, 0], clean[0, 0], atol=1e-6)
    assert not torch.allclose(steered[0, 1:], clean[0, 1:], atol=1e-3)


def test_bad_interventions_are_rejected(sae):
    with pytest.raises(ValueError, match="mode"):
        Intervention(1, "multiply", 2.0)
    with pytest.raises(ValueError, match="finite"):
        Intervention(1, "clamp", float("nan"))
    with pytest.raises(ValueError, match="non-negative"):
        Intervention(-1, "clamp", 1.0)
    with pytest.raises(UnknownLatent, match="0..31"):
        check_interventions(sae, [Intervention(32, "clamp", 1.0)])
    with pytest.raises(ValueError, match="more than one"):
        check_interventions(sae, [Intervention(1, "clamp", 1.0), Intervention(1, "add", 1.0)])
