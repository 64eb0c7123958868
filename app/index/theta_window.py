"""The window around θ: which pre-activations the index histograms per latent, and which count as near misses.

For latent i with threshold θ_i > 0 the window is [(1 − w)·θ_i, (1 + w)·θ_i), cut into P equal bins (P even,
so θ_i is the edge between bin P/2 − 1 and bin P/2). Edge j is θ_i·(1 − w + 2w·j/P), computed in float64; a
pre-activation falls in bin j when edge_j <= pre < edge_{j+1} (the same rule as `torch.bucketize(...,
right=True) − 1`). A latent with θ = 0 (a plain ReLU latent) has an empty window.

A *near miss* is a position where the latent stayed inactive but came close: (1 − w)·θ <= pre <= θ (a latent is
active iff pre > θ, so pre == θ is a near miss). Near misses are ranked by (pre desc, position asc), the same
total order as the top examples, and kept with the same non-overlapping windows.
"""

from __future__ import annotations

import torch

from app.index.config import IndexConfig


def theta_edges(theta: torch.Tensor, cfg: IndexConfig) -> torch.Tensor:
    """float64 [n, P + 1] bin edges of each latent's window (all zero where θ = 0)."""
    w, p = cfg.theta_window, cfg.theta_bins
    rel = 1.0 - w + 2.0 * w * torch.arange(p + 1, dtype=torch.float64, device=theta.device) / p
    return theta.double().view(-1, 1) * rel.view(1, -1)


def theta_bins(pre: torch.Tensor, theta: torch.Tensor, cfg: IndexConfig) -> torch.Tensor:
    """Bin (0..P−1) of each pre-activation in its latent's window, −1 outside it; `theta` holds each entry's θ.

    A float64 guess from pre/θ, then one exact step against the edges (so the rule is the documented one).
    """
    w, p = cfg.theta_window, cfg.theta_bins
    pre, th = pre.double(), theta.double()
    scale = 2.0 * w / p
    safe = torch.where(th > 0, th, torch.ones_like(th))
    b = torch.floor((pre / safe - (1.0 - w)) / scale).clamp(-1, p).long()

    def edge(j: torch.Tensor) -> torch.Tensor:
        return th * (1.0 - w + 2.0 * w * j.double() / p)

    b = torch.where((b >= 0) & (b <= p) & (pre < edge(b)), b - 1, b)
    b = torch.where((b >= -1) & (b < p) & (pre >= edge(b + 1)), b + 1, b)
    inside = (th > 0) & (b >= 0) & (b < p)
    return torch.where(inside, b, torch.full_like(b, -1))


def bins_by_table(pre: torch.Tensor, latent: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """`theta_bins` of entries of several latents from their `theta_edges` table [n, P + 1] (row = `latent`):
    a float64 guess from the first edge and the bin width, then one exact step against the two edges."""
    p = edges.shape[1] - 1
    lo, hi = edges[:, 0], edges[:, p]
    width = (hi - lo) / p
    v = pre.double()
    safe = torch.where(width > 0, width, torch.ones_like(width))
    b = torch.floor((v - lo.index_select(0, latent)) / safe.index_select(0, latent)).clamp_(-1, p).long()
    flat = edges.reshape(-1)
    base = latent * (p + 1)
    at = flat.index_select(0, base + b.clamp(0, p))
    b = torch.where((b >= 0) & (v < at), b - 1, b)
    nxt = flat.index_select(0, base + (b + 1).clamp(0, p))
    b = torch.where((b < p) & (v >= nxt), b + 1, b)
    inside = (hi.index_select(0, latent) > 0) & (b >= 0) & (b < p)
    return torch.where(inside, b, torch.full_like(b, -1))


def window_prefilter(pre: torch.Tensor, theta: torch.Tensor, cfg: IndexConfig) -> torch.Tensor:
    """A cheap superset of the below-θ part of the window, in pre's dtype: θ > 0 and lo <= pre <= θ, with lo
    the window's float64 lower edge rounded down to pre's dtype. `theta_bins` then decides exactly."""
    th = theta.to(pre.dtype)
    lo64 = theta.double() * (1.0 - cfg.theta_window)
    lo = lo64.to(pre.dtype)
    lo = torch.where(lo.double() > lo64, torch.nextafter(lo, torch.full_like(lo, float("-inf"))), lo)
    return (th > 0) & (pre <= th) & (pre >= lo)
