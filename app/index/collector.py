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
    select_bottom,
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

        self._merge_topk(lo, jj[kept], val[kept], p[kept])
        e_new = exponents(st.max[lo:hi])
        regrid = (e_new != exponents(old_max)) & (old_max > 0)
        self._merge_reservoirs(lo, regrid, e_new, jj[rcand], key[rcand], p[rcand], val[rcand])

    def _merge_topk(self, lo: int, lat: torch.Tensor, val: torch.Tensor, pos: torch.Tensor) -> None:
        """Fold window-filtered candidates into the top-k of the latents they belong to."""
        if lat.numel() == 0:
            return
        st, k = self.state, self.cfg.top_k
        touched, local = torch.unique(lat, return_inverse=True)
        n = touched.numel()
        idx = touched + lo
        lat_k = torch.arange(n, device=lat.device).repeat_interleave(k)
        st.top_val[idx], st.top_pos[idx] = select_topk(
            torch.cat([lat_k, local]), torch.cat([st.top_val[idx].reshape(-1), val]),
            torch.cat([st.top_pos[idx].reshape(-1), pos]), n, k)

    def _merge_reservoirs(self, lo: int, regrid: torch.Tensor, e_new: torch.Tensor, lat: torch.Tensor,
                          key: torch.Tensor, pos: torch.Tensor, val: torch.Tensor) -> None:
        """Fold reservoir candidates in: whole latents when their grid doubled, else only the touched buckets."""
        st, cfg = self.state, self.cfg
        n_sub, m = cfg.n_subintervals, cfg.per_interval
        whole = regrid[lat]
        grown = regrid.nonzero(as_tuple=True)[0]
        if grown.numel():
            local = torch.full((regrid.numel(),), -1, dtype=torch.long, device=lat.device)
            local[grown] = torch.arange(grown.numel(), device=lat.device)
            sub = st.select(grown + lo)
            f_lat, f_key, f_pos, f_val = _flat_reservoir(sub)
            res = rebucket(torch.cat([f_lat, local[lat[whole]]]), torch.cat([f_key, key[whole]]),
                           torch.cat([f_pos, pos[whole]]), torch.cat([f_val, val[whole]]), sub.max, cfg)
            st.res_key[grown + lo], st.res_pos[grown + lo], st.res_val[grown + lo] = res
        lat, key, pos, val = lat[~whole], key[~whole], pos[~whole], val[~whole]
        if lat.numel() == 0:
            return
        bucket = lat * n_sub + sub_index(val, e_new[lat], n_sub)
        uniq, inv = torch.unique(bucket, return_inverse=True)
        bl, bs = uniq // n_sub + lo, uniq % n_sub
        nb = uniq.numel()
        slot = torch.arange(nb, device=lat.device).repeat_interleave(m)
        st.res_key[bl, bs], st.res_pos[bl, bs], st.res_val[bl, bs] = select_bottom(
            torch.cat([slot, inv]), torch.cat([st.res_key[bl, bs].reshape(-1), key]),
            torch.cat([st.res_pos[bl, bs].reshape(-1), pos]), torch.cat([st.res_val[bl, bs].reshape(-1), val]),
            nb, m)
