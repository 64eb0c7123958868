"""Brute-force reference of the index statistics from dense activations (slow loops, tiny data only)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.index.config import IndexConfig
from app.index.state import IndexState, hist_bins, hist_edges, interval_groups, interval_samples, position_keys

HOOK = ("resid_post", 1)  # where the test SAE reads
N_ROWS = 12  # rows of 32 tokens in the shared test index


def brute_force(acts: torch.Tensor, cfg: IndexConfig) -> dict[str, list]:
    """acts [R, T, d] (0 = inactive or skipped) → per-latent reference statistics, position = r * T + t."""
    n_rows, ctx, d = acts.shape
    edges = hist_edges(cfg)
    out: dict[str, list] = {k: [] for k in ("count", "total", "max", "hist", "top", "intervals")}
    for i in range(d):
        a = acts[:, :, i]
        r, t = (a > 0).nonzero(as_tuple=True)
        v = a[r, t].float()
        pos = r * ctx + t
        out["count"].append(int(v.numel()))
        out["total"].append(float(v.double().sum()))
        mx = float(v.max()) if v.numel() else 0.0
        out["max"].append(mx)
        out["hist"].append(np.bincount(hist_bins(v, edges).numpy(), minlength=cfg.n_hist_bins))
        # greedy non-overlapping top-k
        order = sorted(range(v.numel()), key=lambda j: (-float(v[j]), int(pos[j])))
        taken: list[int] = []
        for j in order:
            if len(taken) == cfg.top_k:
                break
            if all(int(r[j]) != int(r[q]) or abs(int(t[j]) - int(t[q])) > cfg.separation for q in taken):
                taken.append(j)
        out["top"].append([(float(v[j]), int(pos[j])) for j in taken])
        # interval samples: the m smallest (key, pos) among values inside each reported (lo, hi]
        keys = position_keys(torch.full_like(pos, i), pos, cfg.seed)
        _, iedges = interval_groups(torch.tensor([mx], dtype=torch.float32), cfg)
        iedges = iedges[0].tolist()
        ivals = []
        for j in range(cfg.n_intervals):
            lo, hi = iedges[j], iedges[j + 1]
            inside = [q for q in range(v.numel()) if lo < float(v[q]) <= hi]
            inside.sort(key=lambda q: (int(keys[q]), int(pos[q])))
            ivals.append(sorted(int(pos[q]) for q in inside[: cfg.per_interval]))
        out["intervals"].append((iedges, ivals))
    return out


def assert_matches_brute(st: IndexState, acts: torch.Tensor, cfg: IndexConfig) -> None:
    ref = brute_force(acts, cfg)
    d = acts.shape[2]
    assert st.count.tolist() == ref["count"]
    np.testing.assert_allclose(st.total.numpy(), ref["total"], rtol=1e-9)
    assert st.max.tolist() == pytest.approx(ref["max"], abs=0)
    assert (st.hist.sum(1) == st.count).all()
    np.testing.assert_array_equal(st.hist.numpy(), np.stack(ref["hist"]))
    pos, val, edges = interval_samples(st, cfg)
    for i in range(d):
        got = [(float(v), int(p)) for v, p in zip(st.top_val[i], st.top_pos[i], strict=True) if p >= 0]
        assert got == ref["top"][i], f"latent {i}"
        ref_edges, ref_int = ref["intervals"][i]
        assert edges[i].tolist() == pytest.approx(ref_edges)
        for j in range(cfg.n_intervals):
            ps = sorted(int(p) for p in pos[i, j] if p >= 0)
            assert ps == ref_int[j], f"latent {i} interval {j}"
            for p, v in zip(pos[i, j], val[i, j], strict=True):
                if p >= 0:
                    assert ref_edges[j] < float(v) <= ref_edges[j + 1]


def brute_theta_window(pre: torch.Tensor, keep: torch.Tensor, theta: torch.Tensor, cfg: IndexConfig) -> dict:
    """pre [R, T, d] pre-activations, keep [R, T] counted positions, θ [d] → per-latent θ-window histogram and
    near misses [(pre, pos)], computed latent by latent with bucketize and a greedy loop."""
    from app.index.theta_window import theta_edges

    n_rows, ctx, d = pre.shape
    edges_all = theta_edges(theta, cfg)
    hists, nears = [], []
    for i in range(d):
        r, t = keep.nonzero(as_tuple=True)
        v = pre[r, t, i].double()
        pos = r * ctx + t
        if float(theta[i]) <= 0:
            hists.append(np.zeros(cfg.theta_bins, dtype=np.int64))
            nears.append([])
            continue
        edges = edges_all[i]
        b = torch.bucketize(v, edges, right=True) - 1
        ok = (b >= 0) & (b < cfg.theta_bins)
        hists.append(np.bincount(b[ok].numpy(), minlength=cfg.theta_bins))
        below = [j for j in range(v.numel()) if float(edges[0]) <= float(v[j]) <= float(theta[i])]
        below.sort(key=lambda j: (-float(v[j]), int(pos[j])))
        taken: list[int] = []
        for j in below:
            if len(taken) == cfg.near_k:
                break
            if all(int(r[j]) != int(r[q]) or abs(int(t[j]) - int(t[q])) > cfg.separation for q in taken):
                taken.append(j)
        nears.append([(float(pre[r[j], t[j], i]), int(pos[j])) for j in taken])
    return {"hist": np.stack(hists), "near": nears}


def assert_theta_window_matches_brute(st: IndexState, pre: torch.Tensor, keep: torch.Tensor, theta: torch.Tensor,
                                      cfg: IndexConfig) -> None:
    ref = brute_theta_window(pre, keep, theta, cfg)
    np.testing.assert_array_equal(st.pre_hist.numpy(), ref["hist"])
    for i in range(pre.shape[2]):
        got = [(float(v), int(p)) for v, p in zip(st.near_val[i], st.near_pos[i], strict=True) if p >= 0]
        assert got == ref["near"][i], f"latent {i}"


def brute_loss_effects(lm, sae, hook: tuple[str, int], rows: dict[int, list[int]], latent: torch.Tensor,
                       pos: torch.Tensor, cfg: IndexConfig) -> torch.Tensor:
    """Per-example loss effects [E, W] straight from SPEC §4, one example at a time (slow, tiny models only).

    For each example: the whole row, once clean and once with its latent clamped to 0 at every non-special
    position (sae.encode on the hook activation, h − f_i·d_i in the SAE's input units), CE of every token,
    then the window [centre − before, centre + after] clipped into the row; 0 at the row's first token.
    """
    from app.lm.hooks import intervene

    ctx, width = cfg.context_size, cfg.window_before + cfg.window_after + 1
    out = torch.full((latent.numel(), width), float("nan"))
    for e in range(latent.numel()):
        i, r, t = int(latent[e]), int(pos[e]) // ctx, int(pos[e]) % ctx
        ids = torch.tensor([rows[r]])
        special = lm.special_mask(ids)
        d_i = (sae.W_dec[i] / sae.input_scale).detach()

        def ablate(h, offset, i=i, special=special, d_i=d_i):
            f = sae.encode(h)[..., i].detach() * ~special
            return h - (f.unsqueeze(-1) * d_i).to(h.dtype)

        def ce(ids=ids):
            logp = torch.log_softmax(lm.model(input_ids=ids).logits.float(), -1)[0]
            return torch.cat([torch.zeros(1), -logp[:-1].gather(1, ids[0, 1:, None]).squeeze(1)])

        with torch.no_grad():
            clean = ce()
            with intervene(lm, *hook, ablate):
                ablated = ce()
        start, stop = max(t - cfg.window_before, 0), min(t + cfg.window_after + 1, ctx, len(rows[r]))  # short rows
        out[e, :stop - start] = (ablated - clean)[start:stop]
    return out
