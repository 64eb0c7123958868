"""SAE metrics with the definitions of SPEC §3, as streaming accumulators.

- FVU = Σ_tokens ‖x − x̂‖² / Σ_tokens ‖x − mean(x)‖², the mean taken over the whole set per dimension
  (not per batch: several public tools get this wrong). Explained variance = 1 − FVU.
- L0 = mean over tokens of the number of active latents (pre > θ).
- Density of a latent = fraction of tokens where it is active; dense latents have density > 10 %.
- Dead latents = never active over the last N tokens (N is reported beside the figure).

Every accumulator keeps float64 sums, can be fed batch by batch, and can be merged (across ranks or
shards) with `merge`, so training and evaluation compute the same numbers however the data is split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

DENSE_DENSITY = 0.1  # a latent active on more than 10 % of tokens is "dense" (SPEC §3)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """[..., d] → [N, d] in float64 (accumulation precision)."""
    return x.detach().reshape(-1, x.shape[-1]).to(torch.float64)


@dataclass
class FVUAccumulator:
    """Streaming FVU: Σ‖x − x̂‖² over Σ‖x − μ‖² with μ the per-dimension mean over everything seen.

    The denominator uses Chan's parallel update of (count, mean, M2) per dimension, which stays
    accurate when the mean is large compared with the spread (e.g. residual streams with big offsets).
    """

    count: int = 0
    mean: torch.Tensor | None = None  # [d] running per-dimension mean of x (float64)
    m2: torch.Tensor | None = None  # [d] Σ (x − mean)² per dimension (float64)
    sse: float = 0.0  # Σ ‖x − x̂‖²

    def update(self, x: torch.Tensor, x_hat: torch.Tensor) -> None:
        """Add a batch of activations [..., d] and their reconstructions (same shape)."""
        if x.shape != x_hat.shape:
            raise ValueError(f"x {tuple(x.shape)} and x_hat {tuple(x_hat.shape)} differ in shape")
        xs, xh = _rows(x), _rows(x_hat)
        if xs.shape[0] == 0:
            return
        self.sse += float((xs - xh).pow(2).sum())
        b_mean = xs.mean(0)
        b_m2 = (xs - b_mean).pow(2).sum(0)
        self._merge_moments(xs.shape[0], b_mean, b_m2)

    def _merge_moments(self, n: int, mean: torch.Tensor, m2: torch.Tensor) -> None:
        if self.count == 0 or self.mean is None or self.m2 is None:
            self.count, self.mean, self.m2 = n, mean.clone(), m2.clone()
            return
        total = self.count + n
        delta = mean.to(self.mean.device) - self.mean
        self.m2 = self.m2 + m2.to(self.m2.device) + delta.pow(2) * (self.count * n / total)
        self.mean = self.mean + delta * (n / total)
        self.count = total

    def merge(self, other: FVUAccumulator) -> None:
        """Fold another accumulator (another shard or rank) into this one."""
        self.sse += other.sse
        if other.count and other.mean is not None and other.m2 is not None:
            self._merge_moments(other.count, other.mean, other.m2)

    def moment_sums(self, d: int) -> torch.Tensor:
        """float64 [4 + d]: (count, Σ‖x − x̂‖², Σ‖x − mean_local‖², count·‖mean_local‖², Σx per dimension).

        Every entry adds across ranks or shards, so one all-reduce (sum) of this vector gives the global
        moments; `fvu_from_moment_sums` then computes the FVU about the global mean. Keeping the local
        centred sum apart leaves cancellation only in the (small) between-shard term.
        """
        out = torch.zeros(4 + d, dtype=torch.float64)
        if self.count and self.mean is not None and self.m2 is not None:
            mean = self.mean.detach().double().cpu()
            out[0], out[1], out[2] = float(self.count), self.sse, float(self.m2.sum())
            out[3] = self.count * float(mean.pow(2).sum())
            out[4:] = mean * self.count
        return out

    @property
    def total_variance(self) -> float:
        """Σ_tokens ‖x − μ‖²."""
        return 0.0 if self.m2 is None else float(self.m2.sum())

    @property
    def mse(self) -> float:
        """Mean over tokens of ‖x − x̂‖²."""
        return self.sse / self.count if self.count else float("nan")

    def fvu(self) -> float:
        """Fraction of variance unexplained (nan before any data or for constant data)."""
        var = self.total_variance
        return self.sse / var if self.count and var > 0 else float("nan")

    def explained_variance(self) -> float:
        """1 − FVU."""
        return 1.0 - self.fvu()


def fvu_from_moment_sums(sums: torch.Tensor) -> float:
    """FVU from `FVUAccumulator.moment_sums` summed over shards: Σ‖x − x̂‖² / Σ‖x − μ‖², μ the global mean.

    Σ‖x − μ‖² = Σ_r M2_r + Σ_r n_r‖μ_r‖² − ‖Σx‖² / N (within-shard plus between-shard variance).
    """
    s = sums.detach().to(torch.float64).cpu()
    count, sse, within, mean_sq = (float(v) for v in s[:4])
    if count <= 0:
        return float("nan")
    between = max(mean_sq - float(s[4:].pow(2).sum()) / count, 0.0)
    var = within + between
    return sse / var if var > 0 else float("nan")


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """FVU of one set of activations [..., d] (the mean is that set's per-dimension mean)."""
    acc = FVUAccumulator()
    acc.update(x, x_hat)
    return acc.fvu()


def l0(active: torch.Tensor) -> float:
    """Mean over tokens of the number of active latents; `active` is a bool/0-1 tensor [..., d_sae]."""
    rows = active.reshape(-1, active.shape[-1])
    return float((rows != 0).sum(-1, dtype=torch.float64).mean()) if rows.shape[0] else float("nan")


@dataclass
class LatentStats:
    """Streaming per-latent activity: L0, density, dense fraction, and dead latents over a window.

    `dead_window` is N in "never active over the last N tokens"; a latent counts as dead once at least
    N tokens have passed since it last fired (so nothing is dead before N tokens have been seen).
    """

    d_sae: int
    dead_window: int = 10_000_000  # N tokens of the dead-latent definition
    tokens: int = 0  # tokens seen
    active_total: float = 0.0  # Σ over tokens of the number of active latents
    fire_counts: torch.Tensor = field(init=False)  # [d_sae] tokens on which each latent was active
    since_fired: torch.Tensor = field(init=False)  # [d_sae] tokens since each latent last fired

    def __post_init__(self) -> None:
        if self.d_sae <= 0 or self.dead_window <= 0:
            raise ValueError(f"d_sae and dead_window must be positive, got {self.d_sae}, {self.dead_window}")
        self.fire_counts = torch.zeros(self.d_sae, dtype=torch.float64)
        self.since_fired = torch.zeros(self.d_sae, dtype=torch.int64)

    def update(self, active: torch.Tensor) -> None:
        """Add a batch of activity masks [..., d_sae] (bool or 0/1; special tokens already removed)."""
        rows = active.detach().reshape(-1, self.d_sae) != 0
        n = rows.shape[0]
        if n == 0:
            return
        counts = rows.sum(0, dtype=torch.float64).cpu()
        self.fire_counts += counts
        self.active_total += float(counts.sum())
        self.tokens += n
        # Tokens since the last firing: for latents that fired in this batch, count from their last row.
        fired = counts > 0
        idx = torch.arange(n, device=rows.device).unsqueeze(1).expand_as(rows)
        last = torch.where(rows, idx, torch.full_like(idx, -1)).amax(0).cpu()
        self.since_fired = torch.where(fired, n - 1 - last, self.since_fired + n)

    def update_counts(self, counts: torch.Tensor, n: int) -> None:
        """Cheaper update from per-latent fire counts of a batch of `n` tokens (training loop).

        Dead status is tracked at batch granularity: a latent that fired anywhere in the batch counts as
        having fired at its last token.
        """
        if n <= 0:
            return
        c = counts.detach().to(torch.float64).cpu()
        self.fire_counts += c
        self.active_total += float(c.sum())
        self.tokens += n
        self.since_fired = torch.where(c > 0, torch.zeros_like(self.since_fired), self.since_fired + n)

    def merge(self, other: LatentStats) -> None:
        """Fold another shard's statistics in (dead status: fired recently on either shard)."""
        if other.d_sae != self.d_sae:
            raise ValueError(f"d_sae differs: {self.d_sae} vs {other.d_sae}")
        self.tokens += other.tokens
        self.active_total += other.active_total
        self.fire_counts += other.fire_counts
        self.since_fired = torch.minimum(self.since_fired, other.since_fired)

    def l0(self) -> float:
        """Mean number of active latents per token."""
        return self.active_total / self.tokens if self.tokens else float("nan")

    def density(self) -> torch.Tensor:
        """[d_sae] fraction of tokens on which each latent was active."""
        return self.fire_counts / max(self.tokens, 1)

    def log10_density(self, eps: float = 1e-10) -> torch.Tensor:
        """[d_sae] log10 density (what sparsity.safetensors stores), floored at log10(eps)."""
        return self.density().clamp_min(eps).log10()

    def dead_mask(self) -> torch.Tensor:
        """[d_sae] True for latents not active over the last `dead_window` tokens."""
        return self.since_fired >= self.dead_window

    def dead_fraction(self) -> float:
        return float(self.dead_mask().double().mean())

    def dense_fraction(self, threshold: float = DENSE_DENSITY) -> float:
        """Fraction of latents with density above `threshold` (10 % by SPEC §3)."""
        return float((self.density() > threshold).double().mean()) if self.tokens else float("nan")

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors for a checkpoint (restored with `load_state_dict`)."""
        return {
            "tokens": torch.tensor(self.tokens, dtype=torch.int64),
            "active_total": torch.tensor(self.active_total, dtype=torch.float64),
            "fire_counts": self.fire_counts.clone(),
            "since_fired": self.since_fired.clone(),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.tokens = int(state["tokens"])
        self.active_total = float(state["active_total"])
        self.fire_counts = state["fire_counts"].to(torch.float64).clone()
        self.since_fired = state["since_fired"].to(torch.int64).clone()


def density_histogram(density: torch.Tensor, bins: int = 20, lo: float = -8.0) -> dict[str, list]:
    """Histogram of log10 density over [lo, 0]; latents that never fired are counted in `never`."""
    dens = density.detach().to(torch.float64).cpu()
    never = int((dens <= 0).sum())
    logs = dens[dens > 0].log10().clamp(lo, 0.0)
    edges = torch.linspace(lo, 0.0, bins + 1, dtype=torch.float64)
    counts = torch.histc(logs, bins=bins, min=lo, max=0.0) if logs.numel() else torch.zeros(bins)
    return {"edges": [round(float(e), 6) for e in edges], "counts": [int(c) for c in counts], "never": never}


def finite_or_none(value: float) -> float | None:
    """JSON-safe number: NaN/Inf become None."""
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None
