"""Default vs steered generation: same seed ⇒ same default; no-op edits ⇒ identical; real edits change text."""

from __future__ import annotations

import pytest
import torch

from app.encoding import InputTooLong
from app.sae import UnknownLatent
from app.steering import Intervention, steer

PROMPT = "The red fox"


def test_same_seed_gives_the_same_default(tiny_lm, tiny_sae):
    a = steer(tiny_lm, tiny_sae, PROMPT, [Intervention(3, "clamp", 5.0)], max_new_tokens=12, temperature=1.0,
              seed=7)
    b = steer(tiny_lm, tiny_sae, PROMPT, [Intervention(3, "clamp", 5.0)], max_new_tokens=12, temperature=1.0,
              seed=7)
    c = steer(tiny_lm, tiny_sae, PROMPT, [], max_new_tokens=12, temperature=1.0, seed=7)
    assert a.default == b.default and a.steered == b.steered
    assert a.default == c.default  # the default never depends on the interventions
    assert len(a.default_tokens) > 0


def test_no_op_intervention_matches_default_token_for_token(tiny_lm, tiny_sae):
    r = steer(tiny_lm, tiny_sae, PROMPT, [Intervention(5, "add", 0.0)], max_new_tokens=16, temperature=0.9,
              seed=3)
    assert r.steered_tokens == r.default_tokens


def test_different_seeds_sample_differently(tiny_lm, tiny_sae):
    outs = {steer(tiny_lm, tiny_sae, PROMPT, [], max_new_tokens=16, temperature=1.5, seed=s).default
            for s in range(4)}
    assert len(outs) > 1


def test_strong_steering_changes_the_completion(tiny_lm, tiny_sae):
    # Greedy decoding; a large push along a decoder direction must change what the model says.
    r = steer(tiny_lm, tiny_sae, PROMPT, [Intervention(3, "add", 200.0)], max_new_tokens=8, temperature=0.0,
              seed=0)
    assert r.steered_tokens != r.default_tokens
    assert r.prompt_tokens[0] == tiny_lm.tokenizer.bos_token


def test_matches_a_manual_greedy_loop(tiny_lm, tiny_sae):
    """The default row equals plain greedy decoding without any hook."""
    r = steer(tiny_lm, tiny_sae, PROMPT, [Intervention(1, "clamp", 9.0)], max_new_tokens=6, temperature=0.0)
    ids = tiny_lm.token_ids(PROMPT)
    out: list[int] = []
    with torch.no_grad():
        for _ in range(6):
            nxt = int(tiny_lm.model(input_ids=torch.tensor([ids + out])).logits[0, -1].argmax())
            if nxt == tiny_lm.tokenizer.eos_token_id:
                break
            out.append(nxt)
    assert r.default_tokens == tiny_lm.token_strs(out)


def test_bad_requests(tiny_lm, tiny_sae):
    with pytest.raises(UnknownLatent):
        steer(tiny_lm, tiny_sae, PROMPT, [Intervention(10_000, "clamp", 1.0)], max_new_tokens=2)
    with pytest.raises(InputTooLong, match="limit is 3"):
        steer(tiny_lm, tiny_sae, "one two three four five", [], max_new_tokens=2, max_prompt_tokens=3)
    with pytest.raises(InputTooLong, match="context"):
        steer(tiny_lm, tiny_sae, PROMPT, [], max_new_tokens=10_000)
    with pytest.raises(ValueError, match="empty"):
        steer(tiny_lm, tiny_sae, "   ", [], max_new_tokens=2)
    with pytest.raises(ValueError, match="temperature"):
        steer(tiny_lm, tiny_sae, PROMPT, [], max_new_tokens=2, temperature=-1)


def test_sampling_survives_tiny_temperatures_and_non_finite_logits():
    """A temperature near 0 samples the argmax (no inf/inf = NaN); ±inf and NaN logits never reach multinomial."""
    from app.steering.steer import _sample

    logits = torch.tensor([[1.0, 3.0, 2.0], [float("nan"), 0.5, float("inf")]])
    gens = [torch.Generator().manual_seed(0) for _ in range(2)]
    for t in (1e-300, 5e-324, 1e-30):
        assert _sample(logits, t, None, gens).tolist() == [1, 2]
    assert _sample(logits, 1.0, 1, gens).tolist() == [1, 2]
    with pytest.raises(ValueError, match="no finite logit"):
        _sample(torch.full((1, 4), float("nan")), 0.7, None, gens[:1])
