"""Attribution on the real models of the real tier (SmolLM2-135M, Gemma 3 270M): with SAEs at three layers
(random directions, θ calibrated to ~32 active latents per token), ablating the 10 top-attributed latent nodes
lowers log p(target) more than ablating 10 random active ones, and single ablations rank like the attributions."""

from __future__ import annotations

import random

import pytest
import torch

from app.lm.hooks import capture_many, hook_name
from app.steering import ablation_deltas, attribute_ids, ranked_nodes
from benchmarks.attribution import spearman
from tests.real.conftest import MODELS, real_models  # noqa: F401  (the session fixture)
from tests.steering.helpers import make_sae

pytestmark = pytest.mark.real

PROMPTS = ["The capital of France is Paris, and the capital of Germany is",
           "One, two, three, four, five, six,",
           "She opened the door, looked at the rain and picked up her"]


@pytest.fixture(scope="module", params=MODELS)
def model_and_saes(request, real_models):  # noqa: F811
    lm, _ = real_models(request.param)
    layers = [lm.n_layers // 4, lm.n_layers // 2, 3 * lm.n_layers // 4]
    saes = {f"L{layer}": make_sae(lm.d_model, 1024, seed=layer, threshold=1e-3, hook=hook_name("resid_post", layer))
            for layer in layers}
    ids = torch.tensor([lm.token_ids(" ".join(PROMPTS))])
    acts = capture_many(lm, ids, None, [s.cfg.metadata["hook_name"] for s in saes.values()])
    with torch.no_grad():
        for sae in saes.values():  # one θ per SAE: ~32 of 1024 latents active per token
            pre = sae.pre_acts(acts[sae.cfg.metadata["hook_name"]][0, 1:]).flatten()
            theta = pre.kthvalue(pre.numel() - 32 * (ids.shape[1] - 1)).values.clamp_min(0)
            sae.set_threshold(torch.full((sae.d_sae,), float(theta)))
    return lm, saes


def _nodes(rows):
    return [(n["sae"], n["latent"], n["position"]) for n in rows]


def test_top_attributed_latents_matter_more_than_random_ones_on_a_real_model(model_and_saes):
    lm, saes = model_and_saes
    rng = random.Random(0)
    for prompt in PROMPTS:
        res = attribute_ids(lm, saes, lm.token_ids(prompt))
        nodes = ranked_nodes(res)
        top = sorted(nodes, key=lambda n: -n["attribution"])[:10]
        top_d, random_d = ablation_deltas(lm, saes, res.ids, res.position, res.target,
                                          [_nodes(top), _nodes(rng.sample(nodes, 10))])
        assert top_d < min(random_d, 0.0), (prompt, top_d, random_d)
    rows = ranked_nodes(res, 16)
    measured = ablation_deltas(lm, saes, res.ids, res.position, res.target, [[n] for n in _nodes(rows)])
    assert spearman([-r["attribution"] for r in rows], measured) > 0.5
