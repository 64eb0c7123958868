"""The streaming collector and the pure merge equal a brute-force dense computation, in any batch order."""

from __future__ import annotations

import random

import torch

from app.index.collector import Collector
from app.index.config import IndexConfig
from app.index.state import merge
from tests.index._index_brute import assert_matches_brute

CFG = IndexConfig(context_size=40, top_k=4, n_intervals=3, per_interval=2, interval_subdivisions=2,
                  window_before=3, window_after=2, hist_min_exp=-2, hist_max_exp=2, hist_bins_per_decade=2)


def synthetic_acts(n_rows=24, ctx=40, d=10, seed=0) -> torch.Tensor:
    """Sparse non-negative activations with varied scales, a dense latent, a dead latent and exact ties."""
    g = torch.Generator().manual_seed(seed)
    pre = torch.randn(n_rows, ctx, d, generator=g)
    scale = torch.logspace(-1.5, 1.5, d)
    acts = torch.where(pre > 1.0, pre * scale, torch.zeros(()))
    acts[..., 0] = torch.where(pre[..., 0] > -1.0, pre[..., 0].abs() + 0.1, torch.zeros(()))  # dense latent
    acts[..., 1] = 0.0  # dead latent
    acts[3, 5, 2] = acts[7, 9, 2] = acts[11, 30, 2] = 50.0  # ties at the top, broken by position
    acts[:, 0, :] = 0.0  # BOS is never counted
    return acts


def run_collector(acts: torch.Tensor, cfg: IndexConfig, batches: list[list[int]], chunk: int = 4) -> Collector:
    n_rows, ctx, d = acts.shape
    col = Collector(d, cfg)
    for rows in batches:
        rows_t = torch.tensor(rows)
        flat = acts[rows_t].reshape(-1, d)
        row = rows_t.repeat_interleave(ctx)
        pos = row * ctx + torch.arange(ctx).repeat(len(rows))
        for lo in range(0, d, chunk):  # latent chunks, as on a GPU with a large SAE
            col.update(lo, flat[:, lo:lo + chunk], pos, row)
    return col


def test_streaming_equals_brute_force_in_any_batch_order():
    acts = synthetic_acts()
    rows = list(range(acts.shape[0]))
    batches = [rows[i:i + 3] for i in range(0, len(rows), 3)]
    col = run_collector(acts, CFG, batches)
    assert_matches_brute(col.state, acts, CFG)
    random.Random(1).shuffle(batches)
    shuffled = run_collector(acts, CFG, batches, chunk=10)
    for name, t in col.state.tensors().items():
        if name == "total":
            torch.testing.assert_close(t, shuffled.state.total)
        else:
            assert torch.equal(t, getattr(shuffled.state, name)), name


def test_top_examples_do_not_overlap_and_ties_break_by_position():
    acts = synthetic_acts()
    st = run_collector(acts, CFG, [[r] for r in range(acts.shape[0])]).state
    ctx = acts.shape[1]
    for i in range(acts.shape[2]):
        ps = [int(p) for p in st.top_pos[i] if p >= 0]
        for a in ps:
            for b in ps:
                if a != b and a // ctx == b // ctx:
                    assert abs(a - b) > CFG.separation
    assert st.top_pos[2, :3].tolist() == [3 * ctx + 5, 7 * ctx + 9, 11 * ctx + 30]
    assert st.count[1] == 0 and (st.top_pos[1] == -1).all()


def test_merge_of_shards_equals_single_run():
    acts = synthetic_acts(seed=3)
    rows = list(range(acts.shape[0]))
    whole = run_collector(acts, CFG, [rows[i:i + 4] for i in range(0, 24, 4)]).state
    even = run_collector(acts, CFG, [rows[i:i + 4] for i in range(0, 24, 8)]).state
    odd = run_collector(acts, CFG, [rows[i:i + 4] for i in range(4, 24, 8)]).state
    merged = merge(even, odd, CFG)
    for name, t in whole.tensors().items():
        if name == "total":
            torch.testing.assert_close(t, merged.total)
        else:
            assert torch.equal(t, getattr(merged, name)), name
    assert_matches_brute(merged, acts, CFG)


def test_default_settings_match_brute_force():
    cfg = IndexConfig(context_size=40, window_before=4, window_after=2)
    acts = synthetic_acts(n_rows=16, d=6, seed=5)
    st = run_collector(acts, cfg, [list(range(i, i + 4)) for i in range(0, 16, 4)]).state
    assert_matches_brute(st, acts, cfg)


def test_desc_key_orders_floats_descending():
    from app.index.state import desc_key

    v = torch.tensor([0.5, float("-inf"), 3.0, 1e-8, 2.5, 1e30, -1.0, 0.0])
    assert v[torch.argsort(desc_key(v))].tolist() == sorted(v.tolist(), reverse=True)
