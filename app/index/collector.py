"""Streaming update of the per-latent index state from one batch of SAE activations.

Only the active entries of the batch are touched (activations are sparse), and entries that can no longer
reach a latent's top-k or reservoirs are dropped first, so after a short warm-up the work per batch is
close to the cost of finding the non-zeros.
"""

from __future__ import annotations

import torch

from app.index.config import IndexConfig
from app.index.state import (
    IndexState,
    _flat_reservoir,
    exponents,
    hist_bins,
    hist_edges,
    position_keys,
    rebucket,
    select_topk,
    sub_index,
)
from app.index.windows import greedy_windows


class Collector:
    """Holds the running IndexState for all latents and folds batches of activations into it."""

    def __init__(self, d_sae: int, cfg: IndexConfig, device: torch.device | str = "cpu",
                 state: IndexState | None = None, tokens: int = 0) -> None:
        self.cfg = cfg
        self.d_sae = d_sae
        self.state = state.to(device) if state is not None else IndexState.empty(d_sae, cfg, device)
        self.edges = hist_edges(cfg).to(device)
        self.tokens = tokens  # positions that entered the statistics (special tokens / outliers excluded)

    @torch.no_grad()
    def update(self, lo: int, acts: torch.Tensor, pos: torch.Tensor, row: torch.Tensor) -> None:
        """Fold activations `acts` [N, C] of latents lo..lo+C at N positions (global `pos`, corpus `row`).

        Call once per latent chunk of a batch; every row of the batch must be in the same call set.
        """
        cfg, st = self.cfg, self.state
        n_lat = acts.shape[1]
        hi = lo + n_lat
        ii, jj = (acts > 0).nonzero(as_tuple=True)
        val = acts[ii, jj].float()
        p, r = pos[ii], row[ii]

        # Moments over every active entry.
        old_max = st.max[lo:hi].clone()
        st.count[lo:hi] += torch.bincount(jj, minlength=n_lat)
        st.total[lo:hi].index_add_(0, jj, val.double())
        st.max[lo:hi] = st.max[lo:hi].scatter_reduce(0, jj, val, "amax")
        nb = self.edges.numel() - 1
        st.hist[lo:hi] += torch.bincount(jj * nb + hist_bins(val, self.edges), minlength=n_lat * nb).view(n_lat, nb)

        # Top-k candidates: at least the current k-th best, then non-overlapping within each (latent, row).
        cand = (val >= st.top_val[lo:hi, -1][jj]).nonzero(as_tuple=True)[0]
        rows_local = torch.unique(r[cand], return_inverse=True)[1]
        n_rows = int(rows_local.max()) + 1 if rows_local.numel() else 1
        kept = cand[greedy_windows(jj[cand] * n_rows + rows_local, p[cand], val[cand], cfg.separation, cfg.top_k)]

        # Reservoir candidates: a key above the m-th smallest of its current sub-interval can never get in
        # (sub-intervals only merge as the max grows), unless the value lies beyond the current grid.
        key = position_keys(jj + lo, p, cfg.seed)
        e_old = exponents(old_max)[jj]
        beyond = val.double() > torch.ldexp(torch.ones_like(val, dtype=torch.float64), e_old)
        mth = st.res_key[lo:hi][jj, sub_index(val, e_old, cfg.n_subintervals), -1]
        rcand = (beyond | (key <= mth)).nonzero(as_tuple=True)[0]

        regrid = ((exponents(st.max[lo:hi]) != exponents(old_max)) & (old_max > 0)).nonzero(as_tuple=True)[0]
        touched = torch.unique(torch.cat([jj[kept], jj[rcand], regrid]))
        if touched.numel() == 0:
            return
        local = torch.full((n_lat,), -1, dtype=torch.long, device=acts.device)
        local[touched] = torch.arange(touched.numel(), device=acts.device)
        idx = touched + lo
        sub = st.select(idx)
        n, k = touched.numel(), cfg.top_k
        lat_k = torch.arange(n, device=acts.device).repeat_interleave(k)
        sub.top_val, sub.top_pos = select_topk(
            torch.cat([lat_k, local[jj[kept]]]),
            torch.cat([sub.top_val.reshape(-1), val[kept]]),
            torch.cat([sub.top_pos.reshape(-1), p[kept]]),
            n, k,
        )
        f_lat, f_key, f_pos, f_val = _flat_reservoir(sub)
        sub.res_key, sub.res_pos, sub.res_val = rebucket(
            torch.cat([f_lat, local[jj[rcand]]]),
            torch.cat([f_key, key[rcand]]),
            torch.cat([f_pos, p[rcand]]),
            torch.cat([f_val, val[rcand]]),
            sub.max, cfg,
        )
        st.assign(idx, sub)
