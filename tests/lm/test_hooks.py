"""LM adapter on a tiny random model of every family, loaded through the same path as a real one."""

from __future__ import annotations

import pytest
import torch

from app.lm import (
    HOOK_KINDS,
    UnknownFamilyError,
    capture,
    capture_many,
    hook_name,
    intervene,
    intervene_many,
    load_lm,
    parse_hook_name,
)
from app.lm.hooks import Positions
from app.lm.tiny import FAMILY_TYPES

TEXTS = ["The red fox jumps over the lazy dog.", "Is it raining in Paris?"]


@pytest.fixture(scope="module", params=FAMILY_TYPES)
def lm(request, tiny_model_dir):
    return load_lm(tiny_model_dir(request.param), device="cpu")


def _logits(lm, batch):
    return lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits


def test_loaded_on_cpu_float32_with_bos_and_special_mask(lm):
    assert lm.device.type == "cpu" and lm.dtype == torch.float32
    batch = lm.tokenize(TEXTS)
    assert torch.all(batch.input_ids[:, 0] == lm.tokenizer.bos_token_id)
    assert batch.special_mask[:, 0].all()  # BOS is special
    pad = batch.attention_mask == 0
    assert pad.any() and batch.special_mask[pad].all()  # padding is special
    real = (batch.attention_mask == 1) & (batch.input_ids != lm.tokenizer.bos_token_id)
    assert not batch.special_mask[real].any()


def test_resid_capture_equals_hidden_states(lm):
    batch = lm.tokenize(TEXTS)
    hidden = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                      output_hidden_states=True).hidden_states
    for layer in range(lm.n_layers - 1):  # the last entry of hidden_states has the final norm applied
        post = capture(lm, batch.input_ids, batch.attention_mask, "resid_post", layer)
        pre = capture(lm, batch.input_ids, batch.attention_mask, "resid_pre", layer)
        assert torch.allclose(post, hidden[layer + 1], atol=1e-5)
        assert torch.allclose(pre, hidden[layer], atol=1e-5)


def test_attn_and_mlp_out_sum_to_the_residual_update(lm):
    batch = lm.tokenize(TEXTS)
    layer = 1
    parts = {k: capture(lm, batch.input_ids, batch.attention_mask, k, layer) for k in HOOK_KINDS}
    assert parts["attn_out"].shape == parts["resid_post"].shape
    assert torch.allclose(parts["resid_pre"] + parts["attn_out"] + parts["mlp_out"], parts["resid_post"], atol=1e-4)


def test_capture_stops_after_the_hooked_layer(lm):
    calls = []
    handles = [blk.register_forward_hook(lambda m, a, o, i=i: calls.append(i)) for i, blk in enumerate(lm.layers)]
    try:
        batch = lm.tokenize(TEXTS)
        capture(lm, batch.input_ids, batch.attention_mask, "resid_post", 0)
        assert calls == [0]
        calls.clear()
        capture(lm, batch.input_ids, batch.attention_mask, "mlp_out", 1)
        assert 2 not in calls
    finally:
        for h in handles:
            h.remove()


def test_identity_intervention_leaves_logits_unchanged(lm):
    batch = lm.tokenize(TEXTS)
    clean = _logits(lm, batch)
    for kind in HOOK_KINDS:
        with intervene(lm, kind, 1, lambda h, offset: h):
            assert torch.allclose(_logits(lm, batch), clean, atol=1e-6)
    assert torch.allclose(_logits(lm, batch), clean)  # hooks are removed on exit


def test_adding_a_vector_matches_the_same_edit_one_hook_later(lm):
    batch = lm.tokenize(TEXTS)
    clean = _logits(lm, batch)
    v = torch.randn(lm.d_model, generator=torch.Generator().manual_seed(0))
    with intervene(lm, "resid_post", 0, lambda h, offset: h + v):
        after_post0 = _logits(lm, batch)
    with intervene(lm, "resid_pre", 1, lambda h, offset: h + v):
        before_pre1 = _logits(lm, batch)
    assert not torch.allclose(after_post0, clean, atol=1e-3)  # it does change the output
    assert torch.allclose(after_post0, before_pre1, atol=1e-5)  # resid_post[L] is resid_pre[L+1]


def test_intervention_runs_during_generate_with_offsets(lm):
    ids = torch.tensor([lm.token_ids(TEXTS[0])])
    seen = []

    def record(h, offset):
        seen.append((offset, h.shape[1]))
        return h

    positions = Positions()
    with intervene(lm, "resid_post", 1, record, positions=positions):
        for _ in range(2):  # a second generation restarts at position 0 after reset()
            positions.reset()
            seen.clear()
            lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False,
                              pad_token_id=lm.tokenizer.pad_token_id)
            t = ids.shape[1]
            assert seen[0] == (0, t)  # the prompt pass starts at the BOS position
            assert seen[1:] == [(t, 1), (t + 1, 1)]  # cached steps know their absolute position


def test_without_a_tracker_every_forward_starts_at_zero(lm):
    ids = torch.tensor([lm.token_ids(TEXTS[0])])
    seen = []
    with intervene(lm, "resid_pre", 2, lambda h, offset: seen.append(offset) or h):
        for n in (ids.shape[1], 3):
            lm.model(input_ids=ids[:, :n], use_cache=False)
    assert seen == [0, 0]


def test_hook_names_and_bad_hooks(tiny_lm):
    assert hook_name("resid_post", 2) == "blocks.2.hook_resid_post"
    assert parse_hook_name("blocks.12.hook_mlp_out") == ("mlp_out", 12)
    with pytest.raises(ValueError, match="hook name"):
        parse_hook_name("resid_post")
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="out of range"):
        capture(tiny_lm, ids, None, "resid_post", 99)
    with pytest.raises(ValueError, match="unknown hook"):
        capture(tiny_lm, ids, None, "q_proj", 0)


def test_unknown_family_names_what_to_add(tmp_path, tiny_tokenizer):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model("opt", vocab_size=len(tiny_tokenizer), hidden_size=16, num_hidden_layers=1,
                               ffn_dim=32, num_attention_heads=2, word_embed_proj_dim=16)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    with pytest.raises(UnknownFamilyError, match="add a Family row.*app/lm/families.py"):
        load_lm(tmp_path, device="cpu")



class _TupleBlock(torch.nn.Module):
    """A block returning (hidden, attention weights) as transformers 4.x decoder blocks do."""

    def __init__(self, d: int, seed: int):
        super().__init__()
        self.mlp = torch.nn.Linear(d, d)
        torch.nn.init.normal_(self.mlp.weight, generator=torch.Generator().manual_seed(seed))

    def forward(self, hidden_states, **kwargs):
        return (hidden_states + torch.tanh(self.mlp(hidden_states)), None)


class _TupleStack(torch.nn.Module):
    """A decoder stack that unpacks tuple block outputs, like the 4.x model loops."""

    def __init__(self, d: int, n: int):
        super().__init__()
        self.emb = torch.nn.Embedding(50, d)
        self.layers = torch.nn.ModuleList(_TupleBlock(d, i) for i in range(n))

    def forward(self, input_ids, attention_mask=None, use_cache=False, **kwargs):
        h = self.emb(input_ids)
        for block in self.layers:
            h = block(h)[0]
        return h


def _fake_lm(stack):
    from types import SimpleNamespace

    from app.lm.families import Family

    return SimpleNamespace(layers=stack.layers, n_layers=len(stack.layers), base_model=stack, device="cpu",
                           family=Family("layers", "attn", "mlp", "norm", "emb"))


def test_tuple_block_outputs_are_handled():
    torch.manual_seed(0)
    stack = _TupleStack(8, 3)
    lm = _fake_lm(stack)
    ids = torch.randint(0, 50, (2, 5))
    h = stack.emb(ids)
    outs = []
    for block in stack.layers:
        h = block(h)[0]
        outs.append(h)
    assert torch.allclose(capture(lm, ids, None, "resid_post", 1), outs[1])
    assert torch.allclose(capture(lm, ids, None, "resid_pre", 1), outs[0])
    v = torch.randn(8)
    with intervene(lm, "resid_post", 0, lambda x, offset: x + v):
        edited = stack(ids)
    with intervene(lm, "resid_pre", 1, lambda x, offset: x + v):
        same_point = stack(ids)
    assert not torch.allclose(edited, stack(ids))
    assert torch.allclose(edited, same_point, atol=1e-6)


def test_capture_many_equals_separate_captures_in_one_stopped_pass(lm):
    """Every hook in one forward: each tensor equals `capture` alone, and the pass ends after the deepest hook."""
    batch = lm.tokenize(TEXTS)
    points = ["blocks.0.hook_resid_pre", ("attn_out", 1), "blocks.1.hook_mlp_out", "blocks.0.hook_resid_post",
              ("resid_pre", 1)]
    calls: list[int] = []
    handles = [blk.register_forward_pre_hook(lambda m, a, i=i: calls.append(i)) for i, blk in enumerate(lm.layers)]
    try:
        got = capture_many(lm, batch.input_ids, batch.attention_mask, points)
    finally:
        for h in handles:
            h.remove()
    assert list(got) == ["blocks.0.hook_resid_pre", "blocks.1.hook_attn_out", "blocks.1.hook_mlp_out",
                         "blocks.0.hook_resid_post", "blocks.1.hook_resid_pre"]
    assert calls == [0, 1]  # one pass (each block entered once), and block 2 never ran
    for name, h in got.items():
        kind, layer = parse_hook_name(name)
        assert torch.equal(h, capture(lm, batch.input_ids, batch.attention_mask, kind, layer))


def test_capture_many_of_the_last_block_and_no_points(lm):
    batch = lm.tokenize(TEXTS)
    last = lm.n_layers - 1
    got = capture_many(lm, batch.input_ids, batch.attention_mask, [("resid_post", last), ("resid_post", last)])
    assert list(got) == [hook_name("resid_post", last)]  # a repeated point is captured once
    assert capture_many(lm, batch.input_ids, batch.attention_mask, []) == {}
    with pytest.raises(ValueError, match="out of range"):
        capture_many(lm, batch.input_ids, None, [("resid_post", 0), ("resid_post", 99)])


def test_intervene_many_applies_every_edit_in_one_forward(lm):
    batch = lm.tokenize(TEXTS)
    clean = _logits(lm, batch)
    v = torch.randn(lm.d_model, generator=torch.Generator().manual_seed(1))
    with intervene(lm, "resid_post", 0, lambda h, o: h + v), intervene(lm, "mlp_out", 2, lambda h, o: h - v):
        nested = _logits(lm, batch)
    with intervene_many(lm, [(("resid_post", 0), lambda h, o: h + v), ("blocks.2.hook_mlp_out", lambda h, o: h - v)]):
        together = _logits(lm, batch)
    assert torch.equal(nested, together) and not torch.allclose(together, clean, atol=1e-3)
    assert torch.equal(_logits(lm, batch), clean)  # hooks removed on exit
