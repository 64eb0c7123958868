"""Steering acts on every generated token: the KV-cached decode (`steer`, and HF `generate` under `intervene`)
equals a brute force that re-runs the whole sequence without a cache and edits every non-BOS position, for
every supported family and every intervention mode."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
import torch

from app.lm import intervene, load_lm
from app.lm.hooks import Positions, hook_of
from app.lm.tiny import FAMILY_TYPES
from app.steering import Intervention, apply_interventions, steer, steering_hook
from tests.steering.helpers import make_sae

PROMPT = "The red fox"
N_NEW = 12
D_SAE = 64
EDITS = {
    "clamp": [Intervention(3, "clamp", 8.0)],
    "add": [Intervention(5, "add", 6.0)],
    "ablate": [Intervention(i, "ablate") for i in range(D_SAE)],  # every latent: the SAE's whole reconstruction
}


@pytest.fixture(scope="module", params=FAMILY_TYPES)
def lm(request, tiny_model_dir):
    return load_lm(tiny_model_dir(request.param), device="cpu")


@pytest.fixture(scope="module")
def sae(lm):
    return make_sae(lm.d_model, d_sae=D_SAE, threshold=0.01)  # ~20 latents active per token, so ablation bites


def _until_eos(lm, tokens: list[int]) -> list[int]:
    eos = lm.tokenizer.eos_token_id
    return tokens[: tokens.index(eos)] if eos in tokens else tokens


def per_sae(saes, interventions) -> list[tuple]:
    """(SAE, its interventions) pairs: one SAE takes them all; in a set {name: SAE} each names its SAE."""
    if not isinstance(saes, dict):
        return [(saes, list(interventions))]
    groups: dict[str, list] = {}
    for iv in interventions:
        groups.setdefault(iv.sae, []).append(iv)
    return [(saes[name], group) for name, group in groups.items()]


@torch.no_grad()
def brute_force(lm, saes, ids: list[int], interventions) -> tuple[list[int], torch.Tensor]:
    """Greedy decoding that re-runs the whole sequence each step, no cache, editing every position but BOS at
    each SAE's hook (`saes`: one SAE, or {name: SAE} with interventions naming theirs).

    Returns the new tokens and the next-token logits [steps, V] each step decided on."""
    out: list[int] = []
    logits = []
    with ExitStack() as stack:
        for sae, group in per_sae(saes, interventions):
            def every_non_bos(h, offset, sae=sae, group=group):  # a whole sequence from position 0: h[:, 0] is BOS
                return torch.cat([h[:, :1], apply_interventions(h[:, 1:], sae, group)], dim=1)
            stack.enter_context(intervene(lm, *hook_of(sae), every_non_bos))
        for _ in range(N_NEW):
            logits.append(lm.model(input_ids=torch.tensor([ids + out]), use_cache=False).logits[0, -1])
            nxt = int(logits[-1].argmax())
            if nxt == lm.tokenizer.eos_token_id:
                break
            out.append(nxt)
    return out, torch.stack(logits)


@torch.no_grad()
def hf_generate(lm, sae, ids: list[int], interventions) -> tuple[list[int], torch.Tensor]:
    """Greedy HF `generate` (its own KV cache) with the steering hook and a position tracker."""
    fn = steering_hook(sae, interventions, protect_prefix=1)
    x = torch.tensor([ids])
    with intervene(lm, *hook_of(sae), fn, positions=Positions()):
        gen = lm.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=N_NEW, do_sample=False,
                                pad_token_id=lm.tokenizer.pad_token_id, output_logits=True,
                                return_dict_in_generate=True)
    return _until_eos(lm, gen.sequences[0, len(ids):].tolist()), torch.cat(gen.logits)


def steer_with_logits(lm, sae, interventions):
    """`steer` at temperature 0, plus the steered row's next-token logits at every forward it ran."""
    logits = []
    handle = lm.model.register_forward_hook(lambda m, a, out: logits.append(out.logits[1, -1].detach()))
    try:
        r = steer(lm, sae, PROMPT, interventions, max_new_tokens=N_NEW, temperature=0.0)
    finally:
        handle.remove()
    return r, torch.stack(logits)


def _assert_same_steps(logits: torch.Tensor, expected: torch.Tensor) -> None:
    """Every step that both decodes ran saw the same next-token logits (the tokens agree, so the inputs do)."""
    n = min(len(logits), len(expected))
    assert n >= 2  # at least one generated token went through the hook
    torch.testing.assert_close(logits[:n], expected[:n], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mode", list(EDITS))
def test_steer_equals_brute_force_on_every_generated_token(lm, sae, mode):
    ids = lm.token_ids(PROMPT)
    assert ids[0] == lm.tokenizer.bos_token_id
    expected, expected_logits = brute_force(lm, sae, ids, EDITS[mode])
    unsteered, _ = brute_force(lm, sae, ids, [])
    assert expected != unsteered  # the edit changes the greedy continuation
    r, logits = steer_with_logits(lm, sae, EDITS[mode])
    assert r.default_tokens == lm.token_strs(unsteered)
    assert r.steered_tokens == lm.token_strs(expected)
    _assert_same_steps(logits, expected_logits)


@pytest.mark.parametrize("mode", list(EDITS))
def test_hf_generate_under_intervene_equals_brute_force(lm, sae, mode):
    ids = lm.token_ids(PROMPT)
    expected, expected_logits = brute_force(lm, sae, ids, EDITS[mode])
    tokens, logits = hf_generate(lm, sae, ids, EDITS[mode])
    assert tokens == expected
    _assert_same_steps(logits, expected_logits)


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_no_op_intervention_reproduces_the_default_row(lm, sae, temperature):
    r = steer(lm, sae, PROMPT, [Intervention(5, "add", 0.0)], max_new_tokens=N_NEW, temperature=temperature,
              seed=3)
    assert len(r.default_tokens) > 0
    assert r.steered_tokens == r.default_tokens
