"""encode_many: one prompt through several SAEs at several hooks in one forward pass, each SAE's part equal to
encode_text with that SAE alone."""

from __future__ import annotations

import pytest
import torch

from app.encoding import encode_many, encode_text
from tests.steering.helpers import MULTI_HOOKS, make_saes

TEXT = "The red fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def saes(tiny_lm):
    return make_saes(tiny_lm.d_model)


def test_each_sae_equals_encode_text_alone(tiny_lm, saes):
    res = encode_many(tiny_lm, saes, TEXT, top_k=6)
    assert list(res["per_sae"]) == list(saes)
    for sae_id, sae in saes.items():
        alone = encode_text(tiny_lm, sae, TEXT, top_k=6)
        assert {k: alone[k] for k in ("tokens", "token_ids", "special")} == {k: res[k] for k in
                                                                            ("tokens", "token_ids", "special")}
        part = res["per_sae"][sae_id]
        assert part["hook"] == MULTI_HOOKS[sae_id][0]
        for key in ("l0", "latents_per_token", "top_latents"):
            assert part[key] == alone[key], (sae_id, key)
        l0 = sum(part["l0"]) / (len(part["l0"]) - 1)
        assert 1 <= l0 <= 48, (sae_id, l0)  # every SAE fires, sparsely


def test_one_forward_stopped_after_the_deepest_hook(tiny_lm, saes):
    entered: list[int] = []
    handles = [b.register_forward_pre_hook(lambda m, a, i=i: entered.append(i)) for i, b in enumerate(tiny_lm.layers)]
    mlp_calls: list[int] = []
    handles.append(tiny_lm.layers[2].mlp.register_forward_hook(lambda m, a, o: mlp_calls.append(1)))
    norm_calls: list[int] = []
    handles.append(tiny_lm.final_norm.register_forward_hook(lambda m, a, o: norm_calls.append(1)))
    try:
        encode_many(tiny_lm, saes, TEXT)
        assert entered == [0, 1, 2] and mlp_calls == [1] and norm_calls == []  # deepest: blocks.2 mlp_out
        entered.clear()
        encode_many(tiny_lm, {k: saes[k] for k in ("l0-post", "l1-attn")}, TEXT)
        assert entered == [0, 1]  # block 2 never ran
    finally:
        for h in handles:
            h.remove()


def test_needs_an_sae(tiny_lm):
    with pytest.raises(ValueError, match="at least one SAE"):
        encode_many(tiny_lm, {}, TEXT)


def test_special_positions_have_no_latents(tiny_lm, saes):
    res = encode_many(tiny_lm, saes, TEXT)
    for part in res["per_sae"].values():
        assert part["latents_per_token"][0] == [] and part["l0"][0] == 0
        assert all(t["values"][0] == 0 for t in part["top_latents"])
    assert torch.tensor(res["special"]).nonzero().flatten().tolist() == [0]
