"""Steered generation on the real models equals the no-cache brute force of tests/steering (every step's logits)."""

from __future__ import annotations

import pytest
import torch

from app.lm.hooks import capture, hook_name
from app.steering import Intervention
from tests.real.conftest import MODELS
from tests.steering import test_generation_brute_force as brute
from tests.steering.helpers import make_sae

pytestmark = pytest.mark.real

D_SAE = 64


@pytest.fixture(scope="module", params=MODELS)
def model_and_sae(request, real_models):
    lm, _ = real_models(request.param)
    layer = lm.n_layers // 2
    ids = torch.tensor([lm.token_ids(brute.PROMPT)])
    scale = float(capture(lm, ids, None, "resid_post", layer)[0, 1:].norm(dim=-1).median())
    sae = make_sae(lm.d_model, d_sae=D_SAE, threshold=0.01, hook=hook_name("resid_post", layer))
    return lm, sae, scale


@pytest.mark.parametrize("mode", ["add", "clamp"])
def test_steer_equals_brute_force_on_a_real_model(model_and_sae, mode):
    lm, sae, scale = model_and_sae
    # Edits on the scale of the residual stream (a unit-norm decoder row times ~2 × the median norm).
    edits = [Intervention(5, "add", 2.0 * scale)] if mode == "add" else [Intervention(3, "clamp", 2.0 * scale)]
    ids = lm.token_ids(brute.PROMPT)
    expected, expected_logits = brute.brute_force(lm, sae, ids, edits)
    unsteered, _ = brute.brute_force(lm, sae, ids, [])
    assert expected != unsteered  # the edit changes the greedy continuation
    r, logits = brute.steer_with_logits(lm, sae, edits)
    assert r.default_tokens == lm.token_strs(unsteered)
    assert r.steered_tokens == lm.token_strs(expected)
    n = min(len(logits), len(expected_logits))
    assert n >= 2
    scale_logits = float(expected_logits.abs().max())
    torch.testing.assert_close(logits[:n], expected_logits[:n], atol=1e-4 * scale_logits, rtol=1e-4)
