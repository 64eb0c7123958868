"""The θ window of the index (pre-activation histogram around θ, near misses) equals a brute force, in any batch
order and across shard merges; the builder's one pass records it for a real LM; the dashboard serves it."""

from __future__ import annotations

import random

import pytest
import torch

from app.index.activations import ActiveEntries, active_entries
from app.index.collector import Collector
from app.index.config import IndexConfig
from app.index.service import latent_dashboard
from app.index.state import merge
from app.index.store import connect, get_meta, load_state
from app.index.theta_window import bins_by_table, theta_bins, theta_edges, window_prefilter
from tests.index._index_brute import assert_theta_window_matches_brute

CFG = IndexConfig(context_size=30, top_k=3, n_intervals=2, per_interval=2, interval_subdivisions=2,
                  window_before=2, window_after=1, hist_min_exp=-2, hist_max_exp=2, hist_bins_per_decade=2,
                  theta_window=0.4, theta_bins=8, near_k=4)


def synthetic(n_rows=20, ctx=30, d=7, seed=0):
    """Pre-activations, thresholds (one θ = 0, one latent that never comes near θ), exact ties and edge values."""
    g = torch.Generator().manual_seed(seed)
    pre = torch.randn(n_rows, ctx, d, generator=g) * torch.logspace(-1, 1, d)
    theta = torch.logspace(-1, 1, d) * torch.linspace(0.5, 1.5, d)
    theta[1] = 0.0  # a plain ReLU latent: no window
    pre[..., 2] = -1.0  # never near θ
    theta_3 = float(theta[3])
    pre[2, 4, 3] = pre[5, 9, 3] = pre[8, 20, 3] = theta_3 * 0.95  # ties just below θ, broken by position
    pre[4, 7, 3] = theta_3  # pre == θ: inactive, a near miss, in the bin right above θ
    pre[6, 3, 4] = float(theta_edges(theta[4:5], CFG)[0, 0])  # exactly the window's lower edge
    return pre, theta


def feed(pre, theta, batches, chunk=3, shard=None):
    n_rows, ctx, d = pre.shape
    col = Collector(d, CFG, threshold=theta)
    for rows in batches:
        rows_t = torch.tensor(rows)
        sub = pre[rows_t][:, 1:]  # position 0 (BOS) never enters the statistics
        flat = sub.reshape(-1, d)
        row = rows_t.repeat_interleave(ctx - 1)
        pos = row * ctx + torch.arange(1, ctx).repeat(len(rows))
        for lo in range(0, d, chunk):
            p = flat[:, lo:lo + chunk]
            th = theta[lo:lo + chunk]
            acts = torch.where(p > th, p, torch.zeros(()))
            mask = window_prefilter(p, th, CFG)
            nz = mask.reshape(-1).nonzero().squeeze(1)
            below = ActiveEntries(nz // p.shape[1], nz % p.shape[1], p.reshape(-1)[nz].float(), p.shape[1])
            col.update(lo, active_entries(acts), pos, row, below)
    return col.state


def keep_mask_of(pre):
    keep = torch.ones(pre.shape[:2], dtype=torch.bool)
    keep[:, 0] = False
    return keep


def test_theta_bins_follow_the_documented_edges():
    theta = torch.tensor([0.3, 2.0, 0.0], dtype=torch.float32)
    edges = theta_edges(theta, CFG)
    for i in range(2):
        vals = torch.cat([edges[i].float(), torch.nextafter(edges[i].float(), torch.tensor(0.0)),
                          torch.nextafter(edges[i].float(), torch.tensor(9.0)), torch.rand(50) * 3 * theta[i]])
        want = torch.bucketize(vals.double(), edges[i], right=True) - 1
        want = torch.where((want >= 0) & (want < CFG.theta_bins), want, torch.full_like(want, -1))
        assert torch.equal(theta_bins(vals, theta[i].expand_as(vals), CFG), want)
        assert torch.equal(bins_by_table(vals, torch.full_like(want, i), edges), want)
    assert (theta_bins(torch.tensor([0.0, 1.0]), theta[2].expand(2), CFG) == -1).all()
    assert (bins_by_table(torch.tensor([0.0, 1.0]), torch.tensor([2, 2]), edges) == -1).all()
    assert float(edges[0, CFG.theta_bins // 2]) == pytest.approx(0.3)  # θ is the middle edge


def test_streaming_window_equals_brute_force_in_any_order_and_merge():
    pre, theta = synthetic()
    rows = list(range(pre.shape[0]))
    batches = [rows[i:i + 3] for i in range(0, len(rows), 3)]
    st = feed(pre, theta, batches)
    assert_theta_window_matches_brute(st, pre, keep_mask_of(pre), theta, CFG)
    ctx = pre.shape[1]
    assert int(st.near_pos[3, 0]) == 4 * ctx + 7 and float(st.near_val[3, 0]) == float(theta[3])  # pre == θ
    assert int(st.pre_hist[1].sum()) == 0 and int(st.pre_hist[2].sum()) == 0
    random.Random(2).shuffle(batches)
    shuffled = feed(pre, theta, batches, chunk=7)
    for name in ("pre_hist", "near_val", "near_pos"):
        assert torch.equal(getattr(st, name), getattr(shuffled, name)), name
    even = feed(pre, theta, batches[0::2])
    odd = feed(pre, theta, batches[1::2])
    for a, b in ((even, odd), (odd, even)):
        merged = merge(a, b, CFG)
        for name in ("pre_hist", "near_val", "near_pos", "top_val", "top_pos", "count"):
            assert torch.equal(getattr(merged, name), getattr(st, name)), name


def test_index_pass_records_the_window_of_a_real_model(built, tiny_lm, tiny_sae, corpus_file, index_cfg):
    from tests.index._index_brute import N_ROWS
    from tests.index.test_build import dense_pre_reference

    with connect(built, readonly=True) as conn:
        state, norm_ref = load_state(conn), get_meta(conn, "norm_reference")
    pre, keep = dense_pre_reference(tiny_lm, tiny_sae, corpus_file, index_cfg, N_ROWS, norm_ref)
    theta = tiny_sae.threshold.detach().float()
    assert_theta_window_matches_brute(state, pre, keep, theta, index_cfg)
    assert int(state.pre_hist.sum()) > 0 and int((state.near_pos >= 0).sum()) > 0


def test_dashboard_serves_the_window_and_near_misses(built, index_cfg):
    with connect(built, readonly=True) as conn:
        state = load_state(conn)
    i = int(torch.argmax((state.near_pos >= 0).sum(1) * 1000 + state.pre_hist.sum(1)))
    d = latent_dashboard(built, i)
    ph = d["pre_histogram"]
    assert ph["threshold"] == d["threshold"] and ph["counts"] == state.pre_hist[i].tolist()
    assert len(ph["edges"]) == index_cfg.theta_bins + 1
    assert ph["edges"][index_cfg.theta_bins // 2] == pytest.approx(d["threshold"])
    near = d["near_misses"]
    assert [e["max"] for e in near] == [float(v) for v, p in zip(state.near_val[i], state.near_pos[i],
                                                                   strict=True) if p >= 0]
    for e in near:
        assert len(e["tokens"]) == len(e["pre"]) == len(e["values"])
        assert e["pre"][e["center"]] == pytest.approx(e["max"], rel=1e-5)
        assert e["values"][e["center"]] == 0.0 and e["max"] <= d["threshold"]
        assert all(v == (p if p > d["threshold"] else 0.0) for v, p in zip(e["values"], e["pre"], strict=True))


def test_an_index_of_the_old_schema_reads_without_the_window_and_restarts(built, tmp_path, tiny_lm, tiny_sae,
                                                                          corpus_file, index_cfg):
    import shutil
    from dataclasses import replace

    from app.index.builder import run_index
    from app.index.store import IndexSchemaError, set_meta

    old = tmp_path / "index.db"
    shutil.copy(built, old)
    with connect(old) as conn:  # what a v1 index looks like: no θ window table, schema_version 1
        conn.execute("DROP TABLE theta_window")
        conn.execute("DELETE FROM examples WHERE kind = 'near'")
        set_meta(conn, "schema_version", 1)
        conn.execute("INSERT OR REPLACE INTO explanations(latent, text, updated) VALUES (2, 'kept text', 1.0)")
        conn.commit()
    d = latent_dashboard(old, 0)
    assert d["pre_histogram"] is None and d["near_misses"] == [] and d["top_examples"] is not None
    quick = replace(index_cfg, loss_effects=False)
    with pytest.raises(IndexSchemaError, match="--restart"):
        run_index(tiny_lm, tiny_sae, corpus_file, 64, old, quick)
    run_index(tiny_lm, tiny_sae, corpus_file, 64, old, quick, restart=True)
    assert latent_dashboard(old, 0)["pre_histogram"] is not None
    assert latent_dashboard(old, 2)["explanation"] == "kept text"  # explanations survive the rebuild
