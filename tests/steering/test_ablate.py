"""Ablation effect vs a brute-force reference: separate clean/ablated passes with a hand-written hook."""

from __future__ import annotations

import pytest
import torch

from app.sae import UnknownLatent
from app.steering import ablation_effect

TEXT = "Alice said: I like green apples and warm bread."


def brute_force_delta(lm, sae, text, latents):
    ids = torch.tensor([lm.token_ids(text)])
    layer = lm.layers[1]

    def ablate(module, args, output):
        h = output[0] if isinstance(output, tuple) else output
        f = sae.encode(h).detach()
        new = h.clone()
        for i in latents:
            new[:, 1:] -= f[:, 1:, i:i + 1] * sae.W_dec[i].detach()  # remove f_i·d_i, BOS untouched
        return (new, *output[1:]) if isinstance(output, tuple) else new

    with torch.no_grad():
        clean = torch.log_softmax(lm.model(input_ids=ids).logits[0].float(), -1)
        handle = layer.register_forward_hook(ablate)
        try:
            abl = torch.log_softmax(lm.model(input_ids=ids).logits[0].float(), -1)
        finally:
            handle.remove()
    tgt = ids[0, 1:]
    return (abl[:-1].gather(-1, tgt[:, None]) - clean[:-1].gather(-1, tgt[:, None]))[:, 0], abl - clean


def _active_latents(lm, sae, text, n):
    from app.lm.hooks import capture

    h = capture(lm, torch.tensor([lm.token_ids(text)]), None, "resid_post", 1)[0, 1:]
    counts = (sae.encode(h) > 0).sum(0)
    return counts.topk(n).indices.tolist()


@pytest.mark.parametrize("n", [1, 3])
def test_delta_logprob_matches_brute_force(tiny_lm, tiny_sae, n):
    latents = _active_latents(tiny_lm, tiny_sae, TEXT, n)
    res = ablation_effect(tiny_lm, tiny_sae, TEXT, latents)
    ref, _ = brute_force_delta(tiny_lm, tiny_sae, TEXT, latents)
    assert res["delta_logprob"][0] is None
    assert len(res["delta_logprob"]) == len(res["tokens"])
    got = torch.tensor(res["delta_logprob"][1:])
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-3)
    assert got.abs().max() > 1e-4  # ablating active latents does something


def test_top_moved_tokens_match_brute_force(tiny_lm, tiny_sae):
    latents = _active_latents(tiny_lm, tiny_sae, TEXT, 2)
    res = ablation_effect(tiny_lm, tiny_sae, TEXT, latents, top_n=5)
    _, dlogp = brute_force_delta(tiny_lm, tiny_sae, TEXT, latents)
    # Per position, the token whose logit rose most is the one whose log-prob rose most (the softmax
    # normaliser shifts every token of a position equally).
    for t in range(1, len(res["tokens"])):
        best = res["per_token"][t]["increased"][0]["token_id"]
        assert best == int(dlogp[t - 1].argmax())
    ups = [x["delta"] for x in res["top_increased"]]
    downs = [x["delta"] for x in res["top_decreased"]]
    assert ups == sorted(ups, reverse=True) and downs == sorted(downs)
    assert ups[0] >= downs[0]


def test_inactive_latent_changes_nothing(tiny_lm, tiny_sae):
    from app.lm.hooks import capture

    h = capture(tiny_lm, torch.tensor([tiny_lm.token_ids(TEXT)]), None, "resid_post", 1)[0, 1:]
    never = (tiny_sae.encode(h) > 0).sum(0) == 0
    if not never.any():
        pytest.skip("every latent fires on this text")
    res = ablation_effect(tiny_lm, tiny_sae, TEXT, [int(never.nonzero()[0])])
    assert all(abs(d) < 1e-6 for d in res["delta_logprob"][1:])


def test_ablation_errors(tiny_lm, tiny_sae):
    with pytest.raises(ValueError, match="at least one latent"):
        ablation_effect(tiny_lm, tiny_sae, TEXT, [])
    with pytest.raises(UnknownLatent):
        ablation_effect(tiny_lm, tiny_sae, TEXT, [tiny_sae.d_sae])


def test_moved_tokens_are_ranked_by_mean_delta_logprob(tiny_lm, tiny_sae):
    """`top_increased` / `top_decreased` and `per_token` hold Δlog-prob (log_softmax difference), not Δlogit."""
    latents = _active_latents(tiny_lm, tiny_sae, TEXT, 3)
    res = ablation_effect(tiny_lm, tiny_sae, TEXT, latents, top_n=5)
    _, dlogp = brute_force_delta(tiny_lm, tiny_sae, TEXT, latents)
    mean = dlogp[1:-1].mean(0)  # rows predicting x_2..x_T-1 (row 0 is BOS, never edited; the last predicts nothing)
    for got, ref in ((res["top_increased"], mean.topk(5)), (res["top_decreased"], (-mean).topk(5))):
        assert [c["token_id"] for c in got] == ref.indices.tolist()
        torch.testing.assert_close(torch.tensor([abs(c["delta"]) for c in got]), ref.values.abs(),
                                   atol=1e-5, rtol=1e-4)
    for t in range(1, len(res["tokens"])):
        for c in res["per_token"][t]["increased"] + res["per_token"][t]["decreased"]:
            assert c["delta"] == pytest.approx(float(dlogp[t - 1, c["token_id"]]), abs=1e-5)


def test_a_uniform_logit_shift_is_no_change(tiny_lm, tiny_sae, monkeypatch):
    """Issue 11: an ablation that lifts every logit by 4–8 (and one token by 1 more) raises only that token's
    probability; ranking by Δlogit listed every token as "raised". Synthetic logits stand in for the model."""
    import app.steering.ablate as ablate_mod

    gen = torch.Generator().manual_seed(0)
    winner = 7

    def fake(lm, sae, ids, latents):
        clean = torch.randn(len(ids), tiny_lm.model.config.vocab_size,
                            generator=gen)
        shift = 4.0 + 4.0 * torch.rand(len(ids), 1, generator=gen)  # per position, 4–8 on every logit
        ablated = clean + shift
        ablated[:, winner] += 1.0
        return clean, ablated

    monkeypatch.setattr(ablate_mod, "clean_and_ablated_logits", fake)
    res = ablation_effect(tiny_lm, tiny_sae, TEXT, [0], top_n=4)
    assert res["top_increased"][0]["token_id"] == winner and res["top_increased"][0]["delta"] > 0
    assert all(c["delta"] < 0 for c in res["top_increased"][1:])  # every other token became less likely
    assert all(c["delta"] < 0 for c in res["top_decreased"]) and all(abs(c["delta"]) < 1.0 for c in
                                                                      res["top_decreased"])
    assert all(abs(d) < 1.0 for d in res["delta_logprob"][1:])  # not the 4–8 of the raw logits
