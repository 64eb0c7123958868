"""The dashboard / search / explanation service over a finished tiny index (contract shape and real values)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from app.explain.human import set_explanation
from app.index.activations import corpus_rows
from app.index.service import (
    IndexMissing,
    LatentNotFound,
    index_summary,
    latent_dashboard,
    search_latents,
)
from app.lm.hooks import capture, intervene
from tests.index._index_brute import HOOK

EXAMPLE_KEYS = {"tokens", "token_ids", "values", "center", "max", "loss_effect"}


def busiest_latent(db):
    return max(range(48), key=lambda i: latent_dashboard(db, i)["count"])


def test_dashboard_shape_and_statistics(built, index_cfg):
    d = latent_dashboard(built, busiest_latent(built))
    json.dumps(d, allow_nan=False)  # plain JSON, no NaN
    assert d["count"] > 0 and d["density"] == pytest.approx(d["count"] / d["tokens_seen"])
    assert d["max"] >= d["mean"] > d["threshold"] > 0
    assert sum(d["histogram"]["counts"]) == d["count"]
    assert len(d["histogram"]["edges"]) == len(d["histogram"]["counts"]) + 1
    assert d["histogram"]["edges"][0] <= d["threshold"] and d["histogram"]["edges"][-1] >= d["max"]
    top = d["top_examples"]
    assert 0 < len(top) <= index_cfg.top_k and top[0]["max"] == pytest.approx(d["max"])
    assert [e["max"] for e in top] == sorted((e["max"] for e in top), reverse=True)
    for e in top:
        assert set(e) == EXAMPLE_KEYS
        assert len(e["tokens"]) == len(e["token_ids"]) == len(e["values"]) == len(e["loss_effect"])
        assert e["values"][e["center"]] == pytest.approx(e["max"], rel=1e-5)
        assert len(e["tokens"]) <= index_cfg.window_before + index_cfg.window_after + 1
    assert len(d["interval_examples"]) == index_cfg.n_intervals
    assert d["interval_examples"][-1]["hi"] >= d["max"]
    for iv in d["interval_examples"]:
        assert len(iv["examples"]) <= index_cfg.per_interval
        for e in iv["examples"]:
            assert iv["lo"] < e["max"] <= iv["hi"] and e["loss_effect"] is None
    assert len(d["top_logits"]) == len(d["bottom_logits"]) == index_cfg.n_logits
    assert d["top_logits"][0]["value"] >= d["bottom_logits"][0]["value"]
    assert len(d["neighbors"]) == index_cfg.n_neighbors and all(-1 <= n["cosine"] <= 1 for n in d["neighbors"])


def test_example_values_and_loss_effects_match_a_direct_computation(built, tiny_lm, tiny_sae, corpus_file,
                                                                       index_cfg):
    i = busiest_latent(built)
    ex = latent_dashboard(built, i)["top_examples"][0]
    rows = list(corpus_rows(tiny_lm, corpus_file, 32, 0, 12))
    row = next(r for r in rows if _contains(r, ex["token_ids"]))
    ids = torch.tensor([row])
    start = _find(row, ex["token_ids"])
    f = tiny_sae.encode(capture(tiny_lm, ids, None, *HOOK))[0, :, i].detach()
    got = torch.tensor(ex["values"])
    want = f[start:start + len(got)]
    nz = got != 0  # zeros: skipped (special / outlier) positions
    torch.testing.assert_close(got[nz], want[nz], rtol=1e-4, atol=1e-5)
    d_i = tiny_sae.W_dec[i].detach()
    special = tiny_lm.special_mask(ids)

    def ablate(h, offset):
        fi = tiny_sae.encode(h)[..., i].detach() * ~special
        return h - fi.unsqueeze(-1) * d_i

    def ce():
        logp = torch.log_softmax(tiny_lm.model(input_ids=ids).logits.float(), -1)[0]
        return torch.cat([torch.zeros(1), -logp[:-1].gather(1, ids[0, 1:, None]).squeeze(1)])

    with torch.no_grad():
        clean = ce()
        with intervene(tiny_lm, *HOOK, ablate):
            ablated = ce()
    want_loss = (ablated - clean)[start:start + len(got)]
    torch.testing.assert_close(torch.tensor(ex["loss_effect"]), want_loss, rtol=1e-3, atol=1e-4)
    assert ex["loss_effect"][0] == 0.0 or start > 0


def _find(row, window):
    return next(s for s in range(len(row) - len(window) + 1) if row[s:s + len(window)] == window)


def _contains(row, window):
    return any(row[s:s + len(window)] == window for s in range(len(row) - len(window) + 1))


def test_search_by_number_token_and_explanation(built):
    i = busiest_latent(built)
    d = latent_dashboard(built, i)
    assert search_latents(built, str(i))[0]["latent"] == i
    assert search_latents(built, f"#{i}")[0]["latent"] == i
    top = search_latents(built, d["top_examples"][0]["tokens"][d["top_examples"][0]["center"]].strip(), limit=50)
    assert i in [r["latent"] for r in top]
    set_explanation(built, i, "Fires on weather words like rain")
    set_explanation(built, 3, "Punctuation after numbers")
    hits = search_latents(built, "weath")
    assert [h["latent"] for h in hits] == [i] and hits[0]["explanation"].startswith("Fires")
    assert latent_dashboard(built, i)["explanation"] == "Fires on weather words like rain"
    assert search_latents(built, 'rain" (') and search_latents(built, "zzz-no-such") == []
    set_explanation(built, i, "   ")
    assert latent_dashboard(built, i)["explanation"] is None and search_latents(built, "weather") == []
    r = search_latents(built, "")[0]
    assert set(r) == {"latent", "max", "density", "top_token", "explanation"} and r["latent"] == 0


def test_errors_and_summary(built, tmp_path, tiny_sae):
    with pytest.raises(LatentNotFound):
        latent_dashboard(built, 48)
    with pytest.raises(LatentNotFound):
        latent_dashboard(built, -1)
    with pytest.raises(LatentNotFound):
        set_explanation(built, 10_000, "x")
    with pytest.raises(IndexMissing):
        latent_dashboard(tmp_path / "none.db", 0)
    with pytest.raises(IndexMissing):
        search_latents(tmp_path / "none.db", "x", 5)
    s = index_summary(built)
    assert s["d_sae"] == 48 and s["status"] == "complete" and s["tokens"] > 0
    assert s["sae"]["hook_name"] == "blocks.1.hook_resid_post"
    assert 0 <= s["dead_latents"] <= 48 and s["metrics"] is None
    assert math.isfinite(s["pass_seconds"])
