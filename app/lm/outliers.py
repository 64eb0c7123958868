"""The one rule for positions that never enter training, evaluation or the index.

A position is excluded when its token is special (BOS/EOS/PAD and the tokenizer's other special tokens, or
padding), or when its activation norm at the hook exceeds `outlier_factor` × the *reference norm*: the median
norm over the non-special positions of a reference sample (the first batch of contexts a run reads).
Chat models put huge-norm positions right after a special token (SmolLM2: the token after `<|im_start|>`
reaches ~150× the median norm); left in, one such token dominates Σ‖x‖² and skews training and FVU.

Training (app/training/activations.py), evaluation (app/training/evaluate.py) and the index (app/index) all call
`keep_mask`; each records `outlier_record(...)` in its metadata.
"""

from __future__ import annotations

from typing import Any

import torch

OUTLIER_FACTOR = 10.0  # default: a position with norm > 10 × the median non-special norm is an outlier; 0 = off
RULE = "special tokens and positions whose activation norm exceeds factor × the reference norm are excluded"


def reference_norm(lm: Any, ids: torch.Tensor, h: torch.Tensor) -> float:
    """Median activation norm over the non-special positions of a sample ([B, T] ids, [B, T, d] h); 0 if none."""
    keep = ~lm.special_mask(ids.to(h.device))
    norms = h.float().norm(dim=-1)[keep]
    return float(norms.median()) if norms.numel() else 0.0


def keep_mask(lm: Any, ids: torch.Tensor, h: torch.Tensor, outlier_factor: float,
              norm_ref: float | None) -> torch.Tensor:
    """[B, T] True where a position is kept: not special, and (factor > 0) norm ≤ factor × `norm_ref`."""
    keep = ~lm.special_mask(ids.to(h.device))
    if outlier_factor > 0 and norm_ref:
        keep &= h.float().norm(dim=-1) <= outlier_factor * norm_ref
    return keep


def check_factor(outlier_factor: float) -> None:
    """Raise ValueError for a negative factor (0 turns outlier skipping off)."""
    if not outlier_factor >= 0:
        raise ValueError(f"outlier factor must be >= 0 (0 turns outlier skipping off), got {outlier_factor}")


def outlier_record(outlier_factor: float, norm_ref: float | None, excluded: int | None = None) -> dict[str, Any]:
    """What a run records about the rule: factor, reference norm, the threshold it gives, and optionally how many
    non-special positions it excluded."""
    active = outlier_factor > 0 and bool(norm_ref)
    record: dict[str, Any] = {
        "rule": RULE,
        "factor": outlier_factor,
        "reference_norm": norm_ref,
        "norm_threshold": outlier_factor * norm_ref if active else None,
    }
    if excluded is not None:
        record["excluded_positions"] = excluded
    return record
