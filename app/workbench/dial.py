"""The sparsity dial: scale every threshold by one factor s (θ → s·θ) and read L0, FVU and ΔLM loss along the
curve on the cached sample; search s for a target L0; save an SAE with edited thresholds as a new folder.

L0(s) = mean over positions of #{i : pre_i > s·θ_i} never increases with s, so bisection on log s finds the
factor for a target L0. Each point re-encodes the cached pre-activations (no LM call) and, for ΔLM loss, runs
the sample once with that reconstruction spliced in.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch

from app.lm.model import LanguageModel
from app.sae.jumprelu import JumpReLUSAE
from app.training.metrics import FVUAccumulator
from app.workbench.cache import SampleCache, spliced_nll

log = logging.getLogger(__name__)

MIN_FACTOR, MAX_FACTOR = 1e-4, 1e4


def check_factor(factor: float) -> float:
    f = float(factor)
    if not (MIN_FACTOR <= f <= MAX_FACTOR):  # also refuses NaN
        raise ValueError(f"threshold factor must be between {MIN_FACTOR:g} and {MAX_FACTOR:g}, got {factor!r}")
    return f


def scaled_thresholds(sae: JumpReLUSAE, factor: float) -> torch.Tensor:
    """s·θ in the SAE's dtype (what an SAE saved with that edit holds)."""
    return (sae.threshold.detach() * check_factor(factor)).to(sae.dtype)


def l0_at(cache: SampleCache, theta: torch.Tensor) -> float:
    """Mean number of active latents per position of the sample with thresholds θ."""
    return float((cache.pre > theta.float().cpu()).sum()) / cache.n_tokens


@torch.no_grad()
def dial_point(lm: LanguageModel, sae: JumpReLUSAE, cache: SampleCache, theta: torch.Tensor,
               lm_loss: bool = True) -> dict[str, Any]:
    """L0, FVU and (with `lm_loss`) ΔLM loss of the SAE with thresholds `theta` on the sample."""
    th = theta.float().cpu()
    active = cache.pre > th
    f = cache.pre * active
    x_hat = sae.decode(f.to(sae.device)).float().cpu()
    fvu = FVUAccumulator()
    fvu.update(cache.h, x_hat)
    out: dict[str, Any] = {"l0": float(active.sum()) / cache.n_tokens, "fvu": fvu.fvu(), "delta_lm_loss": None}
    if lm_loss:
        nll = spliced_nll(lm, sae, cache, torch.arange(cache.contexts.shape[0]), x_hat)
        out["delta_lm_loss"] = float(nll.sum() - cache.nll_clean.sum()) / max(cache.predictions, 1)
    return out


def dial_curve(lm: LanguageModel, sae: JumpReLUSAE, cache: SampleCache, factors: list[float],
               lm_loss: bool = True) -> list[dict[str, Any]]:
    """One dial point per factor (sorted ascending): {factor, l0, fvu, delta_lm_loss}."""
    return [{"factor": s, **dial_point(lm, sae, cache, scaled_thresholds(sae, s), lm_loss)}
            for s in sorted(check_factor(s) for s in factors)]


def factor_for_l0(sae: JumpReLUSAE, cache: SampleCache, target_l0: float, iters: int = 60) -> float:
    """The factor s whose L0 on the sample is closest to `target_l0` (bisection on log s in [1e-4, 1e4])."""
    if not target_l0 >= 0 or math.isinf(target_l0):
        raise ValueError(f"target L0 must be a finite number ≥ 0, got {target_l0!r}")
    lo, hi = math.log(MIN_FACTOR), math.log(MAX_FACTOR)  # L0(e^lo) >= L0(e^hi)
    for _ in range(iters):
        mid = (lo + hi) / 2
        if l0_at(cache, scaled_thresholds(sae, math.exp(mid))) > target_l0:
            lo = mid
        else:
            hi = mid
    cands = [math.exp(lo), math.exp(hi)]
    return min(cands, key=lambda s: abs(l0_at(cache, scaled_thresholds(sae, s)) - target_l0))


def edited_copy(sae: JumpReLUSAE, thresholds: torch.Tensor) -> JumpReLUSAE:
    """A copy of the SAE with other (stored) thresholds."""
    other = copy.deepcopy(sae)
    other.set_threshold(thresholds)
    return other


def save_edited(sae: JumpReLUSAE, thresholds: torch.Tensor, out: str | os.PathLike, source: str | os.PathLike,
                edit: dict[str, Any]) -> Path:
    """Write the SAE with `thresholds` as a new SAE folder (atomic, app.sae save) with provenance in its cfg
    metadata: `threshold_edit` = {source, edit (factor or per-latent thresholds), created}. Refuses to write
    into an existing non-empty folder (an index or eval.json there would describe another SAE)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty: choose a new folder for the edited SAE")
    other = edited_copy(sae, thresholds)
    other.cfg.metadata = {**other.cfg.metadata, "threshold_edit": {
        "source": str(Path(source).resolve()), "edit": edit,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}}
    other.save(str(out))
    log.info("saved the edited SAE to %s", out)
    return out
