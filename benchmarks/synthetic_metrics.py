"""Ground-truth scores of an SAE against a planted dictionary (benchmarks/synthetic.py).

Matching: true directions and SAE latents are paired one-to-one by the Hungarian algorithm
(scipy.optimize.linear_sum_assignment) on the absolute cosine between each true direction and each unit decoder
row. Scores, each computed on held-out tokens:

- mcc: mean |cos| over the matched pairs (the mean correlation coefficient of the matched dictionaries);
- max_cos: mean over true directions of the best |cos| with any latent (the "recovery" of the issue);
- max_cos_rare: the same mean over the rarest quarter of true directions (fewest firings on the held-out tokens),
  where a short budget loses recovery first (docs/training.md, eleventh pass); reported, not a goal metric;
- precision / recall / f1: per matched pair, P(true fires | latent fires), P(latent fires | true fires) and
  their harmonic mean; averaged over the matched pairs (a pair with no firing on one side scores 0);
- shrinkage: Σ‖x̂‖ / Σ‖x‖ (1 = none; < 1 = the SAE shrinks its reconstructions);
- fvu: Σ‖x − x̂‖² / Σ‖x − mean(x)‖² (app.training.metrics.fvu);
- l0: mean active latents per token; dead: fraction of latents never active on the held-out tokens.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment

from app.training.metrics import fvu

# metric → +1 when higher is better, −1 when lower is better; shrinkage is scored by |1 − shrinkage|.
RARE_FRACTION = 0.25  # the share of true directions, rarest first, that max_cos_rare averages over
DIRECTION = {"mcc": 1, "max_cos": 1, "precision": 1, "recall": 1, "f1": 1, "shrinkage": 0, "fvu": -1, "dead": -1}


def cosine_matrix(true_dirs: torch.Tensor, w_dec: torch.Tensor) -> torch.Tensor:
    """|cos| between every true direction [n, d] and every decoder row [d_sae, d]: [n, d_sae] (float64)."""
    a = true_dirs.double() / true_dirs.double().norm(dim=1, keepdim=True)
    b = w_dec.double() / w_dec.double().norm(dim=1, keepdim=True).clamp_min(1e-30)
    return (a @ b.T).abs()


def hungarian(cos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One-to-one pairs (true index, latent index) maximising the summed |cos|: min(n, d_sae) pairs."""
    rows, cols = linear_sum_assignment(cos.numpy(), maximize=True)
    return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)


def firing_scores(true_fire: torch.Tensor, latent_fire: torch.Tensor) -> tuple[float, float, float]:
    """Mean precision, recall and F1 over matched pairs; both masks are [tokens, pairs] bool, column k a pair."""
    t, f = true_fire.double(), latent_fire.double()
    both = (t * f).sum(0)
    n_latent, n_true = f.sum(0), t.sum(0)
    precision = torch.where(n_latent > 0, both / n_latent.clamp_min(1), torch.zeros_like(both))
    recall = torch.where(n_true > 0, both / n_true.clamp_min(1), torch.zeros_like(both))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp_min(1e-30), torch.zeros_like(denom))
    return float(precision.mean()), float(recall.mean()), float(f1.mean())


def rare_recovery(best_cos: torch.Tensor, true_fire: torch.Tensor) -> float:
    """Mean best |cos| [n] over the RARE_FRACTION of true directions that fire least in true_fire [tokens, n] (at
    least one direction; ties broken by index)."""
    counts = true_fire.count_nonzero(dim=0)
    k = max(1, round(RARE_FRACTION * counts.numel()))
    rarest = torch.sort(counts, stable=True).indices[:k]
    return float(best_cos[rarest].mean())


def mean_l0(active: torch.Tensor) -> float:
    """Mean number of True entries per row of a [tokens, n] bool mask, counted without widening the mask (a sum
    over rows would first copy it to int64: 32 GiB for s16n's 1M × 4096 training mask at d = 256)."""
    return float(active.count_nonzero()) / active.shape[0]


def score(
    true_dirs: torch.Tensor, true_fire: torch.Tensor, x: torch.Tensor, w_dec: torch.Tensor,
    latents: torch.Tensor, x_hat: torch.Tensor,
) -> dict[str, float]:
    """Every metric of the module docstring for one SAE on held-out tokens x (true_fire: [tokens, n] bool)."""
    cos = cosine_matrix(true_dirs, w_dec)
    rows, cols = hungarian(cos)
    active = latents > 0
    precision, recall, f1 = firing_scores(true_fire[:, rows], active[:, cols])
    best = cos.max(1).values
    return {
        "mcc": float(cos[rows, cols].mean()),
        "max_cos": float(best.mean()),
        "max_cos_rare": rare_recovery(best, true_fire),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "shrinkage": float(x_hat.double().norm(dim=1).sum() / x.double().norm(dim=1).sum()),
        "fvu": fvu(x, x_hat),
        "l0": mean_l0(active),
        "dead": float((~active.any(0)).double().mean()),
    }


def at_least_as_good(ours: dict[str, float], theirs: dict[str, float], tol: float = 0.0) -> dict[str, bool]:
    """Per metric of DIRECTION: is `ours` at least as good as `theirs` (within an absolute tolerance)?"""
    out = {}
    for key, sign in DIRECTION.items():
        if sign == 0:
            out[key] = abs(1 - ours[key]) <= abs(1 - theirs[key]) + tol
        else:
            out[key] = sign * (ours[key] - theirs[key]) >= -tol
    return out
