"""Brute-force reference of the index statistics from dense activations (slow loops, tiny data only)."""

from __future__ import annotations

import numpy as np
import torch

from app.index.config import IndexConfig
from app.index.state import hist_bins, hist_edges, interval_groups, position_keys


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
