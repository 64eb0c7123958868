"""encode_text: per-token active latents equal sae.encode on captured activations; specials are skipped."""

from __future__ import annotations

import pytest
import torch

from app.encoding import InputTooLong, encode_text, latent_weights_summary
from app.lm.hooks import capture

TEXT = "The red fox jumps over the lazy dog."


def test_latents_match_direct_encode(tiny_lm, tiny_sae):
    res = encode_text(tiny_lm, tiny_sae, TEXT, top_k=8)
    ids = tiny_lm.token_ids(TEXT)
    assert res["token_ids"] == ids and len(res["tokens"]) == len(ids)
    f = tiny_sae.encode(capture(tiny_lm, torch.tensor([ids]), None, "resid_post", 1)[0]).detach()
    assert res["latents_per_token"][0] == [] and res["special"][0] is True  # BOS
    theta = tiny_sae.threshold.detach()
    for t in range(1, len(ids)):
        row = res["latents_per_token"][t]
        assert len(row) == min(8, int((f[t] > 0).sum()))
        for item in row:
            assert item["value"] == pytest.approx(float(f[t, item["latent"]]), rel=1e-5)
            assert item["margin"] == pytest.approx(item["value"] - float(theta[item["latent"]]), rel=1e-4)
            assert item["margin"] > 0
        assert [x["value"] for x in row] == sorted((x["value"] for x in row), reverse=True)
        assert res["l0"][t] == int((f[t] > 0).sum())
    top = res["top_latents"][0]
    assert top["max"] == pytest.approx(float(f[1:].max()), rel=1e-5)
    assert top["count"] == int((f[1:, top["latent"]] > 0).sum())
    assert len(top["values"]) == len(ids)


def test_prompt_limit(tiny_lm, tiny_sae):
    with pytest.raises(InputTooLong, match="limit is 4"):
        encode_text(tiny_lm, tiny_sae, TEXT, max_tokens=4)


def test_weights_summary(tiny_lm, tiny_sae):
    s = latent_weights_summary(tiny_lm, tiny_sae, 5, torch.full((tiny_sae.d_sae,), -2.0))
    assert s["density"] == pytest.approx(0.01)
    assert s["threshold"] == pytest.approx(float(tiny_sae.threshold.detach()[5]))
    logits = tiny_sae.W_dec[5].detach() @ tiny_lm.unembed.detach()
    assert s["top_logits"][0]["value"] == pytest.approx(float(logits.max()), rel=1e-5)
    assert s["bottom_logits"][0]["value"] == pytest.approx(float(logits.min()), rel=1e-5)
    assert all(n["latent"] != 5 for n in s["neighbors"])
