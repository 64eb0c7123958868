"""95 % bootstrap intervals over contexts for the evaluation metrics (SPEC §9: `"<metric>_ci": [lo, hi]`).

Contexts are the resampling unit (tokens within a context are correlated). Each context keeps a few sums;
a resample is a vector of multiplicities w (how often each context was drawn), and every metric of the
resample follows from w-weighted sums exactly as it would from concatenating the drawn contexts:

- FVU = Σ w·sse / (Σ w·M2 + Σ w·n·‖m − μ_w‖²), with m, M2 a context's mean and centred sum of squares and
  μ_w the resample's mean (SPEC §3: the mean over the whole evaluated set, here the resampled set);
- CE_x = Σ w·nll_x / Σ w·k (k: the context's counted predictions); ΔLM loss, CE score and KL from those.

Resamples: `torch.randint(0, C, (n_boot, C), generator=torch.Generator().manual_seed(seed))` (row b holds the
drawn context indices of resample b); interval = the (α/2, 1 − α/2) quantiles (linear interpolation).
"""

from __future__ import annotations

import math

import torch

CI_METRICS = ("fvu", "delta_lm_loss", "ce_score", "kl_div")
N_BOOT = 1000


class ContextSums:
    """Per-context float64 sums collected during evaluation (rows in evaluation order)."""

    def __init__(self) -> None:
        self._fvu: list[torch.Tensor] = []  # [B, 3]: n tokens, Σ‖x − x̂‖², Σ‖x − m‖² (m: the context's mean)
        self._means: list[torch.Tensor] = []  # [B, d] the context's mean activation (0 when n = 0)
        self._ce: list[torch.Tensor] = []  # [B, 5]: predictions k, Σ nll clean, Σ nll sae, Σ nll zero, Σ KL

    def add_activations(self, h: torch.Tensor, x_hat: torch.Tensor, real: torch.Tensor) -> None:
        """One batch: activations and reconstructions [B, T, d], real [B, T] (the counted tokens)."""
        w = real.to(torch.float64).unsqueeze(-1)
        x, xh = h.to(torch.float64), x_hat.to(torch.float64)
        n = w.sum((1, 2))
        mean = (x * w).sum(1) / n.clamp_min(1).unsqueeze(-1)
        m2 = ((x - mean.unsqueeze(1)).pow(2) * w).sum((1, 2))
        sse = ((x - xh).pow(2) * w).sum((1, 2))
        self._fvu.append(torch.stack([n, sse, m2], 1).cpu())
        self._means.append(mean.cpu())

    def add_predictions(self, per_row: torch.Tensor) -> None:
        """One batch's [B, 5] per-context sums (k, nll clean, nll sae, nll zero, KL)."""
        self._ce.append(per_row.to(torch.float64).cpu())

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(fvu sums [C, 3], means [C, d], ce sums [C, 5])."""
        return torch.cat(self._fvu), torch.cat(self._means), torch.cat(self._ce)


def resample_weights(n_contexts: int, n_boot: int, seed: int) -> torch.Tensor:
    """[n_boot, n_contexts] float64 multiplicities of each context in each resample (see the module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, n_contexts, (n_boot, n_contexts), generator=gen)
    weights = torch.zeros(n_boot, n_contexts, dtype=torch.float64)
    return weights.scatter_add_(1, draws, torch.ones_like(draws, dtype=torch.float64))


def metrics_of_weights(sums: ContextSums, weights: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each CI metric for every row of `weights` [R, C] (all-ones row: the metric of the whole set)."""
    fv, means, ce = sums.tensors()
    n, sse, m2 = fv[:, 0], fv[:, 1], fv[:, 2]
    mu = (means * n.unsqueeze(1)).sum(0) / n.sum().clamp_min(1)
    centred = means - mu  # shifting by the overall mean leaves variances unchanged and avoids cancellation
    wn = weights * n  # [R, C]
    n_w = wn.sum(1)
    mu_w = (wn @ centred) / n_w.clamp_min(1).unsqueeze(1)  # [R, d]
    between = wn @ centred.pow(2).sum(1) - n_w * mu_w.pow(2).sum(1)
    var = weights @ m2 + between.clamp_min(0)
    fvu = torch.where(var > 0, (weights @ sse) / var, torch.full_like(var, math.nan))
    k, clean, sae, zero, kl = (weights @ ce[:, j] for j in range(5))
    k = k.clamp_min(1)
    ce_clean, ce_sae, ce_zero = clean / k, sae / k, zero / k
    denom = ce_zero - ce_clean
    ce_score = torch.where(denom != 0, (ce_zero - ce_sae) / denom, torch.full_like(denom, math.nan))
    return {"fvu": fvu, "delta_lm_loss": ce_sae - ce_clean, "ce_score": ce_score, "kl_div": kl / k}


def bootstrap_intervals(sums: ContextSums, n_boot: int = N_BOOT, seed: int = 0,
                        level: float = 0.95) -> dict[str, list[float] | None]:
    """`{"<metric>_ci": [lo, hi]}` percentile intervals over contexts; None where a metric is undefined."""
    n_contexts = sums.tensors()[0].shape[0]
    values = metrics_of_weights(sums, resample_weights(n_contexts, n_boot, seed))
    alpha = (1.0 - level) / 2
    q = torch.tensor([alpha, 1.0 - alpha], dtype=torch.float64)
    out: dict[str, list[float] | None] = {}
    for name in CI_METRICS:
        v = values[name]
        v = v[torch.isfinite(v)]
        out[f"{name}_ci"] = [float(x) for x in torch.quantile(v, q)] if v.numel() else None
    return out
