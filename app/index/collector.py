"""Streaming update of the per-latent index state from one batch of SAE activations.

Only the active entries of the batch are touched (activations are sparse). Every active entry feeds the
moments (count, sum, max, histogram); then one vectorised admission mask, built from per-latent thresholds
of the state *before* the batch, keeps only the entries that can still change the top-k (value >= the
current k-th best) or a reservoir (hash key <= the m-th smallest key of its sub-interval, or a value beyond
the current grid). Only those candidates are sorted and merged, so once the buffers have filled a batch
costs a few passes over its non-zeros.

With the SAE's thresholds, the collector also folds the window around θ (theta_window.py): active entries and
the inactive entries just below θ (`below`, from activations.encode_window) feed the pre-activation histogram,
and the ones below θ compete, like the top examples, for the near-miss list.
"""

from __future__ import annotations

import torch

from app.index.activations import ActiveEntries, active_entries, bookkeeping_threads
from app.index.config import IndexConfig
from app.index.state import (
    EMPTY_KEY,
    HistBinner,
    IndexState,
    _flat_reservoir,
    exponents,
    latent_keys,
    position_mix,
    rebucket,
    select_bottom,
    select_topk,
    sub_index,
)
from app.index.theta_window import bins_by_table, theta_edges
from app.index.windows import greedy_windows


class Collector:
    """Holds the running IndexState for all latents and folds batches of activations into it."""

    def __init__(self, d_sae: int, cfg: IndexConfig, device: torch.device | str = "cpu",
                 state: IndexState | None = None, tokens: int = 0, threshold: torch.Tensor | None = None) -> None:
        self.cfg = cfg
        self.threshold = threshold.detach().to(device) if threshold is not None else None  # θ [d_sae]
        self.d_sae = d_sae
        self.state = state.to(device) if state is not None else IndexState.empty(d_sae, cfg, device)
        self.binner = HistBinner(cfg, device)
        self.tokens = tokens  # positions that entered the statistics (special tokens / outliers excluded)
        self.entries = 0  # active (position, latent) entries folded in by this collector
        self.candidates = 0  # ... of which passed the admission mask (went on to be sorted / merged)

    @torch.no_grad()
    def update(self, lo: int, acts: torch.Tensor | ActiveEntries, pos: torch.Tensor, row: torch.Tensor,
               below: ActiveEntries | None = None) -> None:
        """Fold activations of latents lo..lo+C at N positions (global `pos`, corpus `row`, both [N]).

        `acts` is either the dense [N, C] activations or their `ActiveEntries`; `below` the inactive entries
        in the window below θ with their pre-activations (needs the collector's `threshold`). Call once per
        latent chunk of a batch; every row of the batch must be in the same call set.
        """
        with bookkeeping_threads(pos.device):
            ent = acts if isinstance(acts, ActiveEntries) else active_entries(acts)
            self._update(lo, ent, pos, row)
            if self.threshold is not None:
                self._update_window(lo, ent, below, pos, row)

    def _update_window(self, lo: int, ent: ActiveEntries, below: ActiveEntries | None, pos: torch.Tensor,
                       row: torch.Tensor) -> None:
        """The θ-window histogram (active and below-θ entries) and the near misses (below-θ entries)."""
        cfg, st = self.cfg, self.state
        n_lat, nb = ent.n_latents, cfg.theta_bins
        hi = lo + n_lat
        theta = self.threshold[lo:hi]
        edges = theta_edges(theta, cfg)
        top = edges[:, -1].to(ent.value.dtype)  # (1 + w)·θ, rounded: a superset test in the values' dtype
        for part in (ent, below):
            if part is None or part.value.numel() == 0:
                continue
            sub = (part.value <= top.index_select(0, part.latent)).nonzero().squeeze(1)
            lat_s = part.latent.index_select(0, sub)
            b = bins_by_table(part.value.index_select(0, sub), lat_s, edges)
            ok = (b >= 0).nonzero().squeeze(1)
            jj = lat_s.index_select(0, ok)
            st.pre_hist[lo:hi] += torch.bincount(jj * nb + b.index_select(0, ok),
                                                 minlength=n_lat * nb).view(n_lat, nb)
            if part is not below:
                continue
            keep = sub.index_select(0, ok)
            val, ii = part.value.index_select(0, keep), part.token.index_select(0, keep)
            cand = (val >= st.near_val[lo:hi, -1].index_select(0, jj)).nonzero().squeeze(1)
            jj, val, ii = jj[cand], val[cand], ii[cand]
            p, r = pos[ii], row[ii]
            rows_local = torch.unique(r, return_inverse=True)[1]
            n_rows = int(rows_local.max()) + 1 if rows_local.numel() else 1
            kept = greedy_windows(jj * n_rows + rows_local, p, val, cfg.separation, cfg.near_k)
            self._merge_ranked(lo, jj[kept], val[kept], p[kept], st.near_val, st.near_pos)

    def _update(self, lo: int, ent: ActiveEntries, pos: torch.Tensor, row: torch.Tensor) -> None:
        cfg, st = self.cfg, self.state
        ii, jj, val, n_lat = ent.token, ent.latent, ent.value, ent.n_latents
        hi = lo + n_lat

        # Moments over every active entry.
        old_max = st.max[lo:hi].clone()
        st.count[lo:hi] += torch.bincount(jj, minlength=n_lat)
        st.total[lo:hi].index_add_(0, jj, val.double())
        st.max[lo:hi] = st.max[lo:hi].scatter_reduce(0, jj, val, "amax")
        nb = cfg.n_hist_bins
        st.hist[lo:hi] += torch.bincount(jj * nb + self.binner(val), minlength=n_lat * nb).view(n_lat, nb)

        # Admission mask (see the module docstring), then the exact merges on the candidates only.
        cand_top = val >= st.top_val[lo:hi, -1].index_select(0, jj)
        key, cand_res = self._reservoir_admission(lo, old_max, ii, jj, val, pos)
        cand = (cand_top | cand_res).nonzero().squeeze(1)
        self.entries += val.numel()
        self.candidates += cand.numel()
        ii, jj, val, key = ii[cand], jj[cand], val[cand], key[cand]
        cand_top, cand_res = cand_top[cand], cand_res[cand]
        p, r = pos[ii], row[ii]

        # Top-k: at least the current k-th best, then non-overlapping within each (latent, row).
        kt = cand_top.nonzero().squeeze(1)
        rows_local = torch.unique(r[kt], return_inverse=True)[1]
        n_rows = int(rows_local.max()) + 1 if rows_local.numel() else 1
        kept = kt[greedy_windows(jj[kt] * n_rows + rows_local, p[kt], val[kt], cfg.separation, cfg.top_k)]
        self._merge_ranked(lo, jj[kept], val[kept], p[kept], st.top_val, st.top_pos)

        rc = cand_res.nonzero().squeeze(1)
        e_new = exponents(st.max[lo:hi])
        regrid = (e_new != exponents(old_max)) & (old_max > 0)
        self._merge_reservoirs(lo, regrid, e_new, jj[rc], key[rc], p[rc], val[rc])

    def _reservoir_admission(self, lo: int, old_max: torch.Tensor, ii: torch.Tensor, jj: torch.Tensor,
                             val: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(hash key, may-enter mask) of every entry against the reservoirs before this batch.

        A key above the m-th smallest of its current sub-interval can never get in (sub-intervals only
        merge as the max grows, which lowers that m-th key), unless the value lies beyond the current grid
        (value > 2**e): those, and entries of not-yet-full sub-intervals, are always candidates.
        """
        cfg, st = self.cfg, self.state
        n_sub = cfg.n_subintervals
        key = latent_keys(position_mix(pos, cfg.seed).index_select(0, ii), jj + lo)
        # Sub-interval as in `sub_index` (val·S·2**-e is exact in float64); S marks "beyond the grid".
        two = torch.tensor(2.0, dtype=torch.float64, device=val.device)
        scale = torch.pow(two, -exponents(old_max)).mul_(n_sub)
        s = val.double().mul_(scale.index_select(0, jj)).ceil_().clamp_(max=n_sub + 1).long().sub_(1)
        mth = st.res_key[lo:lo + old_max.numel(), :, -1]
        table = torch.cat([mth, torch.full_like(mth[:, :1], EMPTY_KEY)], 1).view(-1)
        return key, key <= table.index_select(0, jj * (n_sub + 1) + s)

    @staticmethod
    def _merge_ranked(lo: int, lat: torch.Tensor, val: torch.Tensor, pos: torch.Tensor, out_val: torch.Tensor,
                      out_pos: torch.Tensor) -> None:
        """Fold window-filtered candidates into a ranked [d_sae, k] list (top examples or near misses)."""
        if lat.numel() == 0:
            return
        k = out_val.shape[1]
        touched, local = torch.unique(lat, return_inverse=True)
        n = touched.numel()
        idx = touched + lo
        lat_k = torch.arange(n, device=lat.device).repeat_interleave(k)
        out_val[idx], out_pos[idx] = select_topk(
            torch.cat([lat_k, local]), torch.cat([out_val[idx].reshape(-1), val]),
            torch.cat([out_pos[idx].reshape(-1), pos]), n, k)

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
