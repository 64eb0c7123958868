"""Attribution (SPEC §9): activation × ∂objective/∂latent for every active latent of several SAEs, from one forward
and one backward pass with the SAEs spliced in (each hook's error its own node).

* On a model made linear after the hooks (last block's MLP a linear map, its norm and the final norm identities),
  the target's logit is linear in every node, so −attribution equals the measured ablation effect exactly, for
  latents and error nodes alike, at every position.
* On a nonlinear model, the attributions equal brute-force per-hook gradients; latents, b_dec and error add up to
  h · g at each hook; finite differences of log p confirm the derivative; the reported log p is the clean model's.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from app.lm import intervene, load_lm
from app.lm.hooks import hook_of
from app.lm.tiny import FAMILY_TYPES
from app.steering import BadTarget, ablation_deltas, attribute, attribute_ids, measure_ablations, ranked_nodes
from app.steering.attribution import error_nodes
from tests.steering.helpers import MULTI_HOOKS, make_sae, make_saes

TEXT = "The red fox jumps over the lazy dog."


# --- a model that is linear after the hooks ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def linear_lm(tiny_model_dir):
    """The tiny Llama in float64 with everything after the last block's attention made linear."""
    lm = load_lm(tiny_model_dir("llama"), device="cpu", dtype="float64")
    d = lm.d_model
    last = lm.layers[-1]
    last.post_attention_layernorm = nn.Identity()
    last.mlp = nn.Linear(d, d, bias=False, dtype=torch.float64)
    nn.init.normal_(last.mlp.weight, std=0.5, generator=torch.Generator().manual_seed(0))
    lm.model.model.norm = nn.Identity()
    lm.model.requires_grad_(False)
    return lm


@pytest.fixture(scope="module")
def last_block_saes(linear_lm):
    last = linear_lm.n_layers - 1
    hooks = {"attn": (f"blocks.{last}.hook_attn_out", 0.01), "mlp": (f"blocks.{last}.hook_mlp_out", 0.01),
             "post": (f"blocks.{last}.hook_resid_post", 0.02)}
    return {k: s.to_dtype_device(torch.float64) for k, s in make_saes(linear_lm.d_model, hooks).items()}


def test_linear_after_the_hooks_attribution_equals_the_ablation_effect(linear_lm, last_block_saes):
    ids = linear_lm.token_ids(TEXT)
    res = attribute_ids(linear_lm, last_block_saes, ids, position=len(ids) - 3, objective="logit")
    nodes = ranked_nodes(res)
    assert len({n["sae"] for n in nodes}) == 3 and len({n["position"] for n in nodes}) > 3
    groups = [[(n["sae"], n["latent"], n["position"])] for n in nodes]
    measured = ablation_deltas(linear_lm, last_block_saes, ids, res.position, res.target, groups, "logit")
    attributed = torch.tensor([n["attribution"] for n in nodes], dtype=torch.float64)
    torch.testing.assert_close(-attributed, torch.tensor(measured, dtype=torch.float64), atol=1e-10, rtol=1e-8)
    assert attributed.abs().max() > 1e-2  # not trivially zero ...
    at_target = torch.tensor([n["position"] == res.position for n in nodes])
    assert not attributed[~at_target].any()  # ... and only the target position matters after the last attention
    # Several latents of one SAE together: each f_i is read from the unmodified activation, so the effects add up.
    # (Across hooks they need not: a later SAE reads its f from the activation the earlier edit changed.)
    post = [k for k, g in enumerate(groups) if g[0][0] == "post"][:6]
    together = ablation_deltas(linear_lm, last_block_saes, ids, res.position, res.target,
                               [[groups[k][0] for k in post]], "logit")
    assert together[0] == pytest.approx(-float(attributed[post].sum()), rel=1e-8)


def test_linear_after_the_hooks_error_attribution_equals_removing_the_error(linear_lm, last_block_saes):
    ids = linear_lm.token_ids(TEXT)
    res = attribute_ids(linear_lm, last_block_saes, ids, objective="logit")
    t = res.position
    for key, sae in last_block_saes.items():
        part = res.saes[key]

        def drop_error(h, offset, sae=sae):
            out = h.clone()
            out[:, t] = sae.decode(sae.encode(h[:, t]))  # the error node at t set to 0
            return out

        with torch.no_grad(), intervene(linear_lm, *hook_of(sae), drop_error):
            logit = linear_lm.model(input_ids=torch.tensor([res.ids])).logits[0, -1, res.target]
        assert float(logit) - res.value == pytest.approx(-float(part.error[t]), rel=1e-8, abs=1e-12)


# --- the real (nonlinear) model ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saes(tiny_lm):
    return {**make_saes(tiny_lm.d_model),  # blocks 0-2, every hook kind; l2-pre is the same tensor as mid-post
            "mid-post": make_sae(tiny_lm.d_model, 48, seed=20, threshold=0.02, hook="blocks.1.hook_resid_post")}


def _hook_gradient(lm, sae, ids, target):
    """∂ log p(target | ids) / ∂h at the SAE's hook alone (a separate pass), and h."""
    seen = {}

    def leaf(h, offset):
        seen["h"] = h.detach().requires_grad_(True)
        return seen["h"]

    with torch.enable_grad(), intervene(lm, *hook_of(sae), leaf):
        logits = lm.model(input_ids=torch.tensor([ids])).logits[0, -1]
        (g,) = torch.autograd.grad(torch.log_softmax(logits, -1)[target], seen["h"])
    return seen["h"].detach()[0], g[0]


def test_attributions_equal_brute_force_per_hook_gradients(tiny_lm, saes):
    ids = tiny_lm.token_ids(TEXT)
    res = attribute_ids(tiny_lm, saes, ids, position=7)
    assert res.ids == ids[:8] and res.position == 7
    for key, sae in saes.items():
        h, g = _hook_gradient(tiny_lm, sae, res.ids, res.target)
        f = sae.encode(h).detach()
        f[0] = 0  # BOS is no node
        d = sae.W_dec.detach()
        torch.testing.assert_close(res.saes[key].f, f, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(res.saes[key].attribution, f * (g @ d.T), atol=1e-7, rtol=1e-4)
        err = h - sae.decode(f).detach()
        expected_err = (err * g).sum(-1)
        expected_err[0] = 0
        torch.testing.assert_close(res.saes[key].error, expected_err, atol=1e-7, rtol=1e-4)
        # Completeness at the hook: latents + b_dec + error = h · g at every non-BOS position.
        total = res.saes[key].attribution.sum(-1) + g @ sae.b_dec.detach() + res.saes[key].error
        torch.testing.assert_close(total[1:], (h * g).sum(-1)[1:], atol=1e-6, rtol=1e-4)
        assert res.saes[key].attribution.abs().max() > 0


def test_one_forward_one_backward_and_the_clean_log_prob(tiny_lm, saes, monkeypatch):
    ids = tiny_lm.token_ids(TEXT)
    forwards, backwards = [], []
    grad = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: backwards.append(1) or grad(*a, **k))
    handle = tiny_lm.model.register_forward_hook(lambda m, a, o: forwards.append(1))
    try:
        res = attribute_ids(tiny_lm, saes, ids)
    finally:
        handle.remove()
    assert forwards == [1] and backwards == [1]
    with torch.no_grad():
        logits = tiny_lm.model(input_ids=torch.tensor([ids])).logits[0, -1]
    assert res.target == int(logits.argmax()) and res.position == len(ids) - 1  # the defaults
    assert res.logprob == pytest.approx(float(torch.log_softmax(logits, -1)[res.target]), abs=1e-6)


def test_finite_differences_of_log_prob(tiny_model_dir):
    """d/dε log p when the top nodes are scaled by (1 − ε) is −attribution (float64 model; its RMSNorms still
    compute in float32, hence ε = 1e-3 and 1 % tolerance)."""
    lm = load_lm(tiny_model_dir("llama"), device="cpu", dtype="float64")
    saes = {k: s.to_dtype_device(torch.float64) for k, s in make_saes(lm.d_model).items()}
    ids = lm.token_ids(TEXT)
    res = attribute_ids(lm, saes, ids)
    eps = 1e-3
    for node in ranked_nodes(res, 4):
        sae, t, i = saes[node["sae"]], node["position"], node["latent"]

        def shrink(h, offset, sae=sae, t=t, i=i, f=node["activation"]):
            out = h.clone()
            out[:, t] -= eps * f * sae.W_dec[i].detach()
            return out

        with torch.no_grad(), intervene(lm, *hook_of(sae), shrink):
            lp = torch.log_softmax(lm.model(input_ids=torch.tensor([res.ids])).logits[0, -1], -1)[res.target]
        assert (float(lp) - res.logprob) / eps == pytest.approx(-node["attribution"], rel=1e-2, abs=1e-6)


def test_ranked_rows_and_the_json_layout(tiny_lm, saes):
    out = attribute(tiny_lm, saes, TEXT, top_k=10)
    ids = tiny_lm.token_ids(TEXT)
    assert out["token_ids"] == ids and out["position"] == len(ids) - 1 and len(out["attributions"]) == 10
    scores = [abs(r["attribution"]) for r in out["attributions"]]
    assert scores == sorted(scores, reverse=True)
    assert {r["sae"] for r in out["attributions"]} <= set(saes)
    assert all(r["activation"] > 0 and 1 <= r["position"] <= out["position"] for r in out["attributions"])
    assert len(out["error_attributions"]) == len(saes) * (len(ids) - 1)  # every SAE, every non-BOS position
    for part in out["per_sae"].values():
        assert len(part["position_totals"]) == len(ids) and part["position_totals"][0] == 0
        assert part["total"] == pytest.approx(sum(part["position_totals"]), abs=1e-5)
    assert out["target"] == tiny_lm.tokenizer.decode([out["target_token"]])
    assert out["top_next"][0]["token_id"] == out["target_token"]
    full = attribute_ids(tiny_lm, saes, ids)
    assert len(ranked_nodes(full)) == sum(int((p.f > 0).sum()) for p in full.saes.values())
    assert error_nodes(full, out["special"]) == out["error_attributions"]


def test_a_chosen_target_and_position(tiny_lm, saes):
    ids = tiny_lm.token_ids(TEXT)
    word = tiny_lm.tokenizer.decode([ids[4]])  # the token that actually follows position 3
    out = attribute(tiny_lm, saes, TEXT, position=3, target_token=word, top_k=5)
    assert out["position"] == 3 and out["target_token"] == ids[4] and out["target"] == word
    assert out["token_ids"] == ids[:4]
    by_id = attribute(tiny_lm, saes, TEXT, position=3, target_token=ids[4], top_k=5)
    assert by_id["attributions"] == out["attributions"]


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"position": 99}, "outside the prompt"),
    ({"position": -1}, "outside the prompt"),
    ({"target_token": 10**6}, "outside the vocabulary"),
    ({"target_token": " fox jumps over the lazy dog"}, "give one token"),
    ({"objective": "kl"}, "unknown objective"),
])
def test_bad_targets(tiny_lm, saes, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        attribute(tiny_lm, saes, TEXT, **kwargs)
    assert issubclass(BadTarget, ValueError)


def test_measured_ablations(tiny_lm, saes):
    ids = tiny_lm.token_ids(TEXT)
    res = attribute_ids(tiny_lm, saes, ids)
    top = [(n["sae"], n["latent"], n["position"]) for n in ranked_nodes(res, 3)]
    inactive = next((k, i, 2) for k, p in res.saes.items() for i in range(p.f.shape[1]) if p.f[2, i] == 0)
    out = measure_ablations(tiny_lm, saes, TEXT, [*top, inactive])
    assert out["target_token"] == res.target and out["position"] == res.position
    deltas = [a["delta"] for a in out["ablations"]]
    assert deltas[-1] == 0.0  # ablating an inactive latent changes nothing, exactly
    assert all(d != 0 for d in deltas[:-1])
    # One node alone in a batch of many gives the same measurement (rows are independent).
    alone = ablation_deltas(tiny_lm, saes, ids, res.position, res.target, [[top[0]]])
    assert alone[0] == pytest.approx(deltas[0], abs=1e-5)
    with pytest.raises(BadTarget, match="outside positions"):
        ablation_deltas(tiny_lm, saes, ids, 3, res.target, [[(top[0][0], top[0][1], 5)]])


@pytest.mark.parametrize("family", FAMILY_TYPES)
def test_every_family(tiny_model_dir, family):
    """The splice works on every supported architecture (tuple or tensor block outputs, sublayer norms): latent
    attributions equal the per-hook brute force."""
    lm = load_lm(tiny_model_dir(family), device="cpu")
    saes = make_saes(lm.d_model, {k: (hook, 1e-6) for k, (hook, _) in MULTI_HOOKS.items()})  # dense: any pre > 0
    res = attribute_ids(lm, saes, lm.token_ids(TEXT))
    for key, sae in saes.items():
        h, g = _hook_gradient(lm, sae, res.ids, res.target)
        f = sae.encode(h).detach()
        f[0] = 0
        assert res.saes[key].attribution.abs().max() > 0, (family, key)
        torch.testing.assert_close(res.saes[key].attribution, f * (g @ sae.W_dec.detach().T), atol=1e-6, rtol=1e-4)


def test_does_not_disturb_the_model(tiny_lm, saes):
    before = copy.deepcopy(tiny_lm.model.state_dict())
    attribute(tiny_lm, saes, TEXT)
    assert all(not p.requires_grad for p in tiny_lm.model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in tiny_lm.model.state_dict().items())
    assert not tiny_lm.model._forward_hooks and all(not m._forward_hooks for m in tiny_lm.model.modules())


def test_dense_fallback_gives_the_same_attributions(tiny_lm, saes, monkeypatch):
    ids = tiny_lm.token_ids(TEXT)
    sparse = attribute_ids(tiny_lm, saes, ids)

    def unavailable(*args, **kwargs):
        raise NotImplementedError("no sampled_addmm here")

    monkeypatch.setattr(torch.sparse, "sampled_addmm", unavailable)
    dense = attribute_ids(tiny_lm, saes, ids)
    for key in saes:
        torch.testing.assert_close(sparse.saes[key].attribution, dense.saes[key].attribution, atol=1e-7, rtol=1e-5)
        torch.testing.assert_close(sparse.saes[key].error, dense.saes[key].error, atol=1e-7, rtol=1e-5)
