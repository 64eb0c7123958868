"""The running per-latent statistics of an index and the pure merge that combines two of them.

Everything here is order-independent, so batches, resumed runs, extensions and torchrun shards all reduce
to `merge(a, b)` and give the same answer as one long run:

* counts, sums, max and the histogram (fixed log-spaced edges) add up / take the max;
* top-k: entries are ranked by (value desc, global position asc) — a total order, so ties are deterministic.
  Non-overlap only concerns positions of one corpus row, and a row is always inside one batch, so each batch
  applies the window rule within its rows (see windows.py) before its entries reach this merge;
* interval samples: every (latent, position) gets a hash key; a uniform sample of m items of any set is the m
  items with the smallest (key, position), which is mergeable. The max is only known at the end, so the
  reservoirs live on a grid of S sub-intervals of (0, 2**e], 2**e = max rounded up to a power of two. When
  the max crosses 2**e, e grows and sub-interval s becomes s >> Δe (computed from the value itself, exactly),
  whose reservoir is the bottom-m of the union — again exact. At the end, the n display intervals are
  unions of whole sub-intervals (see `interval_groups`).
* the θ window (theta_window.py): a histogram of pre-activations around θ adds up; near misses (inactive
  positions with pre just below θ) are a second top-k, ranked by pre like the top examples by value.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from app.index.config import IndexConfig

EMPTY_KEY = 1 << 40  # larger than any 32-bit hash key: marks an empty reservoir slot
_M32 = 0xFFFFFFFF
_MIX = 0x45D9F3B  # < 2**27, so x * _MIX never overflows int64 for 32-bit x


def _mix32(x: torch.Tensor) -> torch.Tensor:
    x = (((x >> 16) ^ x) * _MIX) & _M32
    x = (((x >> 16) ^ x) * _MIX) & _M32
    return (x >> 16) ^ x


def position_mix(pos: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The latent-independent half of `position_keys` (computed once per position, shared by its latents)."""
    s = _mix32(torch.tensor(seed & _M32, dtype=torch.long, device=pos.device))
    x = _mix32((pos & _M32) ^ s)
    return _mix32(x ^ ((pos >> 32) & _M32))


def latent_keys(mixed: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """`position_keys` from `position_mix(pos)` of each entry: one mix per (latent, position), in place."""
    x = mixed ^ (latent.long() & _M32)
    for _ in range(2):
        y = x >> 16
        y ^= x
        y *= _MIX
        y &= _M32
        x = y
    y = x >> 16
    y ^= x
    return y


def position_keys(latent: torch.Tensor, pos: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A 32-bit pseudo-random key per (latent, global position), identical on every device and run."""
    return latent_keys(position_mix(pos, seed), latent)


def desc_key(values: torch.Tensor) -> torch.Tensor:
    """An int64 in [0, 2**32) that sorts float32 values in descending order (−inf last)."""
    b = values.float().contiguous().view(torch.int32).long() & _M32
    asc = torch.where(b >= 0x80000000, (~b) & _M32, b | 0x80000000)
    return _M32 - asc


def group_rank(group: torch.Tensor, key: torch.Tensor, tiebreak: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sort entries by (group, key, tiebreak) ascending; return (order, sorted groups, rank within group).

    `group` must lie in [0, 2**31) and `key` in [0, 2**32): one sort on group·2**32 + key suffices unless two
    entries share both, which is rare, and then a stable pre-sort by `tiebreak` decides.
    """
    comp = (group << 32) | key
    order = torch.argsort(comp, stable=True)
    sc = comp[order]
    if sc.numel() > 1 and bool((sc[1:] == sc[:-1]).any()):
        pre = torch.argsort(tiebreak, stable=True)
        order = pre[torch.argsort(comp[pre], stable=True)]
    g = group[order]
    idx = torch.arange(g.numel(), device=g.device)
    first = torch.ones_like(g, dtype=torch.bool)
    first[1:] = g[1:] != g[:-1]
    start = torch.cummax(torch.where(first, idx, torch.zeros_like(idx)), 0).values
    return order, g, idx - start


def exponents(max_values: torch.Tensor) -> torch.Tensor:
    """e = ceil(log2(max)) exactly (0 where max <= 0): the reservoir grid spans (0, 2**e]."""
    mant, ex = torch.frexp(max_values.double())
    e = ex - (mant == 0.5).to(ex.dtype)
    return torch.where(max_values > 0, e, torch.zeros_like(e)).long()


def sub_index(values: torch.Tensor, e: torch.Tensor, n_sub: int) -> torch.Tensor:
    """Sub-interval s with value in (s·w, (s+1)·w], w = 2**e / n_sub (exact float64 arithmetic)."""
    x = torch.ldexp(values.double() * n_sub, -e)
    return (torch.ceil(x).long() - 1).clamp(0, n_sub - 1)


def hist_edges(cfg: IndexConfig) -> torch.Tensor:
    """The fixed log-spaced histogram edges shared by every latent and run (float64)."""
    return torch.logspace(cfg.hist_min_exp, cfg.hist_max_exp, cfg.n_hist_bins + 1, dtype=torch.float64)


def hist_bins(values: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Bin of each value; values outside the edges go to the first / last bin."""
    b = torch.bucketize(values.double(), edges.to(values.device), right=True) - 1
    return b.clamp(0, edges.numel() - 2)


class HistBinner:
    """`hist_bins` for float32 values without a binary search: a log10 guess, then an exact one-step fix.

    The fix compares against the float64 edges rounded *up* to float32, which for a float32 value v is the
    same test as v >= edge in float64. float32 log10 is off by far less than a bin, so one step suffices.
    """

    def __init__(self, cfg: IndexConfig, device: torch.device | str = "cpu") -> None:
        edges = hist_edges(cfg)
        up = edges.float()
        up = torch.where(up.double() < edges, torch.nextafter(up, torch.tensor(float("inf"))), up)
        self.up = up.to(device)
        self.n_bins, self.lo, self.per_decade = cfg.n_hist_bins, float(cfg.hist_min_exp), cfg.hist_bins_per_decade

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        g = values.float().log10().sub_(self.lo).mul_(self.per_decade).floor_()
        b = g.clamp_(0, self.n_bins - 1).long()
        b -= ((values < self.up.index_select(0, b)) & (b > 0)).long()
        b += ((values >= self.up.index_select(0, b + 1)) & (b < self.n_bins - 1)).long()
        return b


@dataclass
class IndexState:
    """Running statistics for latents [lo, lo + n) (leading dim n). Empty slots: value −inf / key EMPTY_KEY."""

    count: torch.Tensor  # int64 [n] active tokens
    total: torch.Tensor  # float64 [n] sum of active values
    max: torch.Tensor  # float32 [n] max value (0 when never active)
    hist: torch.Tensor  # int64 [n, bins] counts over hist_edges
    top_val: torch.Tensor  # float32 [n, k] top values, ranked by (value desc, position asc)
    top_pos: torch.Tensor  # int64 [n, k] their global positions (row * context_size + t), −1 if empty
    res_key: torch.Tensor  # int64 [n, S, m] reservoir hash keys per sub-interval of (0, 2**e]
    res_pos: torch.Tensor  # int64 [n, S, m] their positions
    res_val: torch.Tensor  # float32 [n, S, m] their values
    pre_hist: torch.Tensor  # int64 [n, P] pre-activations in the window around θ (theta_window.py)
    near_val: torch.Tensor  # float32 [n, K] near misses: pre-activations <= θ, closest to θ first
    near_pos: torch.Tensor  # int64 [n, K] their global positions, −1 if empty

    @classmethod
    def empty(cls, n: int, cfg: IndexConfig, device: torch.device | str = "cpu") -> IndexState:
        k, s, m = cfg.top_k, cfg.n_subintervals, cfg.per_interval
        kw = dict(device=device)
        return cls(
            count=torch.zeros(n, dtype=torch.long, **kw),
            total=torch.zeros(n, dtype=torch.float64, **kw),
            max=torch.zeros(n, dtype=torch.float32, **kw),
            hist=torch.zeros(n, cfg.n_hist_bins, dtype=torch.long, **kw),
            top_val=torch.full((n, k), float("-inf"), dtype=torch.float32, **kw),
            top_pos=torch.full((n, k), -1, dtype=torch.long, **kw),
            res_key=torch.full((n, s, m), EMPTY_KEY, dtype=torch.long, **kw),
            res_pos=torch.full((n, s, m), -1, dtype=torch.long, **kw),
            res_val=torch.zeros((n, s, m), dtype=torch.float32, **kw),
            pre_hist=torch.zeros(n, cfg.theta_bins, dtype=torch.long, **kw),
            near_val=torch.full((n, cfg.near_k), float("-inf"), dtype=torch.float32, **kw),
            near_pos=torch.full((n, cfg.near_k), -1, dtype=torch.long, **kw),
        )

    @property
    def n(self) -> int:
        return self.count.shape[0]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def select(self, idx: torch.Tensor | slice) -> IndexState:
        """The sub-state of some latents (a copy for index tensors, a view for slices)."""
        return IndexState(**{k: v[idx] for k, v in self.tensors().items()})

    def assign(self, idx: torch.Tensor | slice, other: IndexState) -> None:
        """Write `other` into latents `idx` in place."""
        for k, v in self.tensors().items():
            v[idx] = getattr(other, k).to(v.device)

    def to(self, device: torch.device | str) -> IndexState:
        return IndexState(**{k: v.to(device) for k, v in self.tensors().items()})


def select_topk(lat: torch.Tensor, val: torch.Tensor, pos: torch.Tensor, n: int, k: int):
    """Dense [n, k] (values, positions) of the best k entries per latent by (value desc, position asc)."""
    out_val = torch.full((n, k), float("-inf"), dtype=torch.float32, device=val.device)
    out_pos = torch.full((n, k), -1, dtype=torch.long, device=val.device)
    keep = val > float("-inf")
    lat, val, pos = lat[keep], val[keep], pos[keep]
    order, g, rank = group_rank(lat, desc_key(val), pos)
    ok = rank < k
    out_val[g[ok], rank[ok]] = val[order][ok].float()
    out_pos[g[ok], rank[ok]] = pos[order][ok]
    return out_val, out_pos


def select_bottom(group: torch.Tensor, key: torch.Tensor, pos: torch.Tensor, val: torch.Tensor,
                  n_groups: int, m: int):
    """Dense [n_groups, m] (keys, positions, values) of the m entries with the smallest (key, position)."""
    dev = key.device
    out_key = torch.full((n_groups, m), EMPTY_KEY, dtype=torch.long, device=dev)
    out_pos = torch.full((n_groups, m), -1, dtype=torch.long, device=dev)
    out_val = torch.zeros((n_groups, m), dtype=torch.float32, device=dev)
    keep = key < EMPTY_KEY
    group, key, pos, val = group[keep], key[keep], pos[keep], val[keep]
    order, g, rank = group_rank(group, key, pos)
    ok = rank < m
    out_key[g[ok], rank[ok]] = key[order][ok]
    out_pos[g[ok], rank[ok]] = pos[order][ok]
    out_val[g[ok], rank[ok]] = val[order][ok].float()
    return out_key, out_pos, out_val


def rebucket(lat: torch.Tensor, key: torch.Tensor, pos: torch.Tensor, val: torch.Tensor,
             max_after: torch.Tensor, cfg: IndexConfig):
    """Reservoirs [n, S, m] from flat entries, on the grid set by each latent's (final) max."""
    n, n_sub, m = max_after.shape[0], cfg.n_subintervals, cfg.per_interval
    e = exponents(max_after)
    s = sub_index(val, e[lat], n_sub)
    k, p, v = select_bottom(lat * n_sub + s, key, pos, val, n * n_sub, m)
    return k.view(n, n_sub, m), p.view(n, n_sub, m), v.view(n, n_sub, m)


def _flat_reservoir(st: IndexState) -> tuple[torch.Tensor, ...]:
    n = st.n
    lat = torch.arange(n, device=st.count.device).view(n, 1, 1).expand_as(st.res_key)
    return lat.reshape(-1), st.res_key.reshape(-1), st.res_pos.reshape(-1), st.res_val.reshape(-1)


def merge(a: IndexState, b: IndexState, cfg: IndexConfig) -> IndexState:
    """The state of the union of two disjoint sets of positions (pure; same latents in both)."""
    count, total = a.count + b.count, a.total + b.total
    mx, hist = torch.maximum(a.max, b.max), a.hist + b.hist
    top_val, top_pos = _merge_ranked(a.top_val, a.top_pos, b.top_val, b.top_pos)
    near_val, near_pos = _merge_ranked(a.near_val, a.near_pos, b.near_val, b.near_pos)
    fa, fb = _flat_reservoir(a), _flat_reservoir(b)
    res_key, res_pos, res_val = rebucket(*(torch.cat([x, y]) for x, y in zip(fa, fb, strict=True)), mx, cfg)
    return IndexState(count=count, total=total, max=mx, hist=hist, top_val=top_val, top_pos=top_pos,
                      res_key=res_key, res_pos=res_pos, res_val=res_val, pre_hist=a.pre_hist + b.pre_hist,
                      near_val=near_val, near_pos=near_pos)


def _merge_ranked(val_a: torch.Tensor, pos_a: torch.Tensor, val_b: torch.Tensor, pos_b: torch.Tensor):
    """The best k of two [n, k] ranked lists by (value desc, position asc)."""
    n, k = val_a.shape
    lat = torch.arange(n, device=val_a.device).view(n, 1).expand(n, 2 * k).reshape(-1)
    return select_topk(lat, torch.cat([val_a, val_b], 1).reshape(-1), torch.cat([pos_a, pos_b], 1).reshape(-1),
                       n, k)


def interval_groups(max_values: torch.Tensor, cfg: IndexConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Display intervals as runs of whole sub-intervals: (bounds [n, I+1] in sub-interval units, edges [n, I+1]).

    Interval j covers sub-intervals [B_j, B_{j+1}) with B_j = ceil(j·max/I / w), w = 2**e / S: the nominal
    edge j·max/I snapped up to the grid. Since max > 2**(e-1), w < (2 / interval_subdivisions)·(max/I): less
    than half an interval at the default of 4 subdivisions. Each interval's samples are then an exact uniform
    sample of the activations inside the reported (lo, hi].
    """
    n_int, n_sub = cfg.n_intervals, cfg.n_subintervals
    e = exponents(max_values)
    j = torch.arange(n_int + 1, dtype=torch.float64, device=max_values.device)
    nominal = max_values.double().view(-1, 1) * j / n_int
    bounds = torch.ceil(torch.ldexp(nominal * n_sub, -e.view(-1, 1))).long().clamp(0, n_sub)
    edges = torch.ldexp(bounds.double() / n_sub, e.view(-1, 1))
    return bounds, edges


def interval_samples(st: IndexState, cfg: IndexConfig):
    """Per latent and display interval, the m samples with the smallest keys: (pos, val) [n, I, m], edges."""
    bounds, edges = interval_groups(st.max, cfg)
    n, n_int = st.n, cfg.n_intervals
    lat, key, pos, val = _flat_reservoir(st)
    s = torch.arange(cfg.n_subintervals, device=key.device).view(1, -1, 1).expand_as(st.res_key).reshape(-1)
    # interval of sub-interval s: the j with B_j <= s < B_{j+1}
    j = torch.searchsorted(bounds[lat], s.view(-1, 1), right=True).view(-1) - 1
    j = j.clamp(0, n_int - 1)
    _, p, v = select_bottom(lat * n_int + j, key, pos, val, n * n_int, cfg.per_interval)
    m = cfg.per_interval
    return p.view(n, n_int, m), v.view(n, n_int, m), edges
