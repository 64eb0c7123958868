"""Real GGUF models through load_lm: same logits as plain transformers, capture parity at every hook kind."""

from __future__ import annotations

import pytest
import torch

from app.lm.gguf import SOURCE_FILE, cache_root, converted_folder, file_sha256
from app.lm.hooks import HOOK_KINDS, capture
from tests.real.conftest import MODELS, gguf_file

pytestmark = pytest.mark.real

TEXTS = ["The quick brown fox jumps over the lazy dog because it was late for dinner.",
         "def add(a, b):\n    return a + b\n\nprint(add(2, 3))"]
# Where each architecture adds the attention and MLP outputs to the residual stream (plain module names).
SUBLAYERS = {"llama": ("self_attn", "mlp"), "gemma3_text": ("post_attention_layernorm", "post_feedforward_layernorm")}


@pytest.mark.parametrize("name", MODELS)
def test_load_lm_equals_transformers_and_caches_the_conversion(name, real_models, monkeypatch):
    ours, ref = real_models(name)
    path = gguf_file(name)
    folder = cache_root() / file_sha256(path)
    assert (folder / SOURCE_FILE).is_file() and (folder / "config.json").is_file()
    batch = ours.tokenize(TEXTS)
    got = ours.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    want = ref(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)

    def no_conversion(*a, **k):
        raise AssertionError("converted again although the folder is cached")

    monkeypatch.setattr("app.lm.gguf._convert", no_conversion)
    assert converted_folder(path) == folder


@pytest.mark.parametrize("name", MODELS)
def test_capture_equals_plain_transformers_at_every_hook_kind(name, real_models):
    ours, ref = real_models(name)
    batch = ours.tokenize(TEXTS)
    ids, mask = batch.input_ids, batch.attention_mask
    layers = ref.model.layers
    layer = len(layers) // 2
    attn_name, mlp_name = SUBLAYERS[ref.config.model_type]
    seen = {}
    handles = [
        getattr(layers[layer], attn_name).register_forward_hook(
            lambda m, a, o: seen.__setitem__("attn_out", o[0] if isinstance(o, tuple) else o)),
        getattr(layers[layer], mlp_name).register_forward_hook(
            lambda m, a, o: seen.__setitem__("mlp_out", o[0] if isinstance(o, tuple) else o)),
    ]
    try:
        hidden = ref(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    finally:
        for h in handles:
            h.remove()
    want = {"resid_pre": hidden[layer], "resid_post": hidden[layer + 1], **seen}
    got = {kind: capture(ours, ids, mask, kind, layer) for kind in HOOK_KINDS}
    real = mask.bool()
    for kind in HOOK_KINDS:
        scale = float(want[kind][real].norm(dim=-1).median())
        torch.testing.assert_close(got[kind][real], want[kind][real], atol=1e-4 * scale, rtol=1e-4, msg=kind)
    update = got["resid_post"] - got["resid_pre"]
    torch.testing.assert_close((got["attn_out"] + got["mlp_out"])[real], update[real],
                               atol=1e-3 * float(update[real].norm(dim=-1).median()), rtol=1e-4)
