"""The input normalisation of a training run: the mean μ subtracted (--center; by default when μ holds at least
`CENTER_ABOVE` of E‖x‖²), then one scalar s with E‖s·(x − μ)‖² = 1 (SPEC §2's scalar, taken about the mean), both
estimated on a sample of the training activations and folded into the saved weights
(`JumpReLUSAE.fold_input_mean`, then `fold_input_scale`), so a saved SAE takes raw activations. `--center false`
is SPEC's recipe exactly (μ = 0).

Why centre: some layers keep most of their energy in one shared direction (Gemma 3 270M's layer 9: 93 % of
E‖x‖² is ‖μ‖²). Scaled but not centred, the mean is what every encoder column sees most, b_enc has to cancel
it, and each step that turns a column along it shifts that latent's pre-activation on every token at once;
half the latents died there. Training on x − μ leaves the SAE's function class unchanged (the fold is exact) and
only changes the optimisation.

Why not always: on planted sparse data whose zero is where no direction fires, and whose small mean is made of the
directions themselves, centring costs a little (the issue's case, 2× superposition at d = 256, share 0.02:
max-|cos| 0.971 vs 0.982 uncentred). But a constant offset on top of such data costs the uncentred run far more,
and from small shares on (s8h at d = 256: 0.911 → 0.883 at a share of 0.035, 0.842 at 0.05). docs/training.md has
the measurements (eighteenth to twentieth passes). Since the twenty-first pass a linear-θ run's encoder reads
x − b_dec (`auto_apply_b_dec_to_input`), which removes that cost for offsets up to 0.05; a large mean (0.3) still
needs centring, so the line stays.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from app.training.config import TrainConfig
from app.training.distributed import DistContext

log = logging.getLogger(__name__)

# --center false warns when ‖μ‖² ÷ E‖x‖² is above this (Gemma 3 270M layer 9: 0.92, with half its latents dead
# uncentred; SmolLM2-135M layer 15: 0.53; the planted benchmark: 0.02-0.18).
MEAN_DOMINATES = 0.8
# The default (--center unset) centres when ‖μ‖² ÷ E‖x‖² is at least this. Over the 33 runs compared (planted
# data with and without an added offset, two real models) the worst loss of max-|cos| against the better variant
# is 0.017 with this line, as with always centring (which also loses 0.011 on the issue's own case, share 0.02,
# left uncentred here), 0.025 with a line at 0.05 and 0.066 at 0.1. docs/training.md, twentieth pass.
CENTER_ABOVE = 0.03


def input_stats(source: Any, config: TrainConfig, dist: DistContext) -> tuple[torch.Tensor | None, float]:
    """(μ, s) from the first `norm_tokens` rows of the source's block 0, summed over ranks: μ their mean in raw
    units (float32) when the run centres (--center true, or unset and `CENTER_ABOVE` reached), None otherwise; s
    with E‖s·(x − μ)‖² = 1, or 1 with --no-normalize. Training reads s·(x − μ)."""
    if not (config.normalize or config.center is not False):
        return None, 1.0
    n = min(config.norm_tokens, source.block_size(0))
    x = source.rows(0, torch.arange(n)).double()
    sums = dist.all_reduce_tensor(torch.cat([x.sum(0), x.new_tensor([x.pow(2).sum(), x.shape[0]])]))
    count = max(float(sums[-1]), 1.0)
    mean = sums[:-2] / count
    share = _energy_share(mean, float(sums[-2]) / count)
    if config.center is False:
        _warn_if_mean_dominates(share)
    elif config.center is None:
        log.info("inputs %s: their mean holds %.1f %% of their energy (--center auto: from %.0f %%)",
                 "centred" if share >= CENTER_ABOVE else "not centred", 100 * share, 100 * CENTER_ABOVE)
    centre = config.center if config.center is not None else share >= CENTER_ABOVE
    if centre:
        x = x - mean
    else:
        mean = None
    mean32 = None if mean is None else mean.float()
    if not config.normalize:
        return mean32, 1.0
    total, count = dist.all_reduce_floats(float(x.pow(2).sum()), float(x.shape[0]))
    mean_sq = total / max(count, 1.0)
    if not mean_sq > 0:
        what = "every activation equals the mean" if mean is not None else "activations are all zero"
        raise ValueError(f"{what}; cannot normalise them")
    return mean32, 1.0 / math.sqrt(mean_sq)


def mean_energy_fraction(x: torch.Tensor) -> float:
    """‖μ‖² ÷ E‖x‖² over the rows of x: the share of the activations' energy that sits in their mean."""
    x = x.double()
    return _energy_share(x.mean(0), float(x.pow(2).sum(1).mean()))


def _energy_share(mean: torch.Tensor, mean_square: float) -> float:
    """‖μ‖² ÷ E‖x‖² from the mean and E‖x‖² (0 for all-zero activations)."""
    return float(mean.pow(2).sum()) / mean_square if mean_square > 0 else 0.0


def _warn_if_mean_dominates(share: float) -> None:
    if share > MEAN_DOMINATES:
        log.warning("the activations' mean holds %.0f %% of their energy; with --center false many latents may die "
                    "(docs/training.md, eighteenth pass)", 100 * share)
