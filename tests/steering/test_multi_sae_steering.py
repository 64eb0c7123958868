"""Steering and ablation across layers: each intervention names its SAE, several SAEs at several hook points act
in one generation. The KV-cached `steer` equals a no-cache brute force that edits every non-BOS position at every
hook (every family), and SAEs sharing a hook point each read the unmodified activation."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
import torch

from app.lm import hook_of, intervene, load_lm
from app.lm.tiny import FAMILY_TYPES
from app.sae import UnknownLatent
from app.steering import (
    Intervention,
    ablation_effect,
    apply_interventions,
    check_interventions,
    steer,
    steering_hooks,
)
from app.steering.ablate import clean_and_ablated_logits
from tests.steering.helpers import make_sae
from tests.steering.test_generation_brute_force import N_NEW, PROMPT, brute_force, per_sae

EDITS = [Intervention(3, "clamp", 6.0, sae="early"), Intervention(5, "add", 4.0, sae="late"),
         Intervention(7, "ablate", sae="late")]


@pytest.fixture(scope="module", params=FAMILY_TYPES)
def lm(request, tiny_model_dir):
    return load_lm(tiny_model_dir(request.param), device="cpu")


@pytest.fixture(scope="module")
def saes(lm):
    last = lm.n_layers - 1
    return {"early": make_sae(lm.d_model, 64, seed=1, threshold=0.01, hook="blocks.0.hook_resid_post"),
            "late": make_sae(lm.d_model, 64, seed=2, threshold=0.001, hook=f"blocks.{last}.hook_mlp_out")}


def test_two_saes_at_two_layers_equal_the_brute_force(lm, saes):
    ids = lm.token_ids(PROMPT)
    expected, expected_logits = brute_force(lm, saes, ids, EDITS)
    for one in ("early", "late"):  # each SAE's edits matter: without them the first step's logits differ
        _, alone = brute_force(lm, saes, ids, [iv for iv in EDITS if iv.sae == one])
        assert not torch.allclose(alone[0], expected_logits[0], atol=1e-3)
    logits = []
    handle = lm.model.register_forward_hook(lambda m, a, o: logits.append(o.logits[1, -1].detach()))
    try:
        r = steer(lm, saes, PROMPT, EDITS, max_new_tokens=N_NEW, temperature=0.0)
    finally:
        handle.remove()
    assert r.steered_tokens == lm.token_strs(expected)
    assert r.default_tokens == lm.token_strs(brute_force(lm, saes, ids, [])[0])
    n = min(len(logits), len(expected_logits))
    assert n >= 2
    torch.testing.assert_close(torch.stack(logits)[:n], expected_logits[:n], atol=1e-4, rtol=1e-4)


def test_ablation_across_layers_equals_nested_hooks(lm, saes):
    ids = lm.token_ids(PROMPT)
    latents = [("early", 3), ("late", 7), ("late", 9)]
    clean, ablated = clean_and_ablated_logits(lm, saes, ids, latents)
    ivs = [Intervention(i, "ablate", sae=k) for k, i in latents]
    with ExitStack() as stack:
        for sae, group in per_sae(saes, ivs):
            stack.enter_context(intervene(lm, *hook_of(sae), lambda h, o, sae=sae, group=group: torch.cat(
                [h[:, :1], apply_interventions(h[:, 1:], sae, group)], dim=1)))
        expected = lm.model(input_ids=torch.tensor([ids])).logits[0].float()
    torch.testing.assert_close(ablated, expected, atol=1e-5, rtol=1e-5)
    res = ablation_effect(lm, saes, PROMPT, latents)
    assert res["latents"] == [3, 7, 9] and res["latent_saes"] == ["early", "late", "late"]


def test_saes_sharing_a_hook_each_read_the_unmodified_activation(tiny_lm):
    a = make_sae(tiny_lm.d_model, 64, seed=3, threshold=0.01)
    b = make_sae(tiny_lm.d_model, 32, seed=4, threshold=0.01)  # same hook (blocks.1.hook_resid_post)
    ivs = [Intervention(2, "clamp", 3.0, sae="a"), Intervention(2, "ablate", sae="b"), Intervention(6, "add", 1.5,
                                                                                                   sae="b")]
    hooks = steering_hooks({"a": a, "b": b}, ivs, protect_prefix=1)
    assert [name for name, _ in hooks] == ["blocks.1.hook_resid_post"]
    h = torch.randn(2, 5, tiny_lm.d_model, generator=torch.Generator().manual_seed(0)) * 0.3
    out = hooks[0][1](h, 0)
    delta = (apply_interventions(h, a, ivs[:1]) - h) + (apply_interventions(h, b, ivs[1:]) - h)
    torch.testing.assert_close(out[:, 1:], (h + delta)[:, 1:], atol=1e-6, rtol=1e-6)
    assert torch.equal(out[:, 0], h[:, 0])  # BOS untouched


def test_checks_name_the_sae(tiny_lm):
    saes = {"a": make_sae(tiny_lm.d_model, 16), "b": make_sae(tiny_lm.d_model, 8, seed=1)}
    check_interventions(saes, [Intervention(3, sae="a"), Intervention(3, sae="b")])  # one latent index, two SAEs
    check_interventions(saes, [Intervention(12)])  # no name: the first SAE (16 latents)
    with pytest.raises(UnknownLatent, match="latent 12 of SAE 'b' does not exist"):
        check_interventions(saes, [Intervention(12, sae="b")])
    with pytest.raises(ValueError, match="more than one intervention"):
        check_interventions(saes, [Intervention(3, sae="a"), Intervention(3)])
    with pytest.raises(ValueError, match="names SAE 'c'"):
        check_interventions(saes, [Intervention(3, sae="c")])
    with pytest.raises(ValueError, match="at least one SAE"):
        check_interventions({}, [])
