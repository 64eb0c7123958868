"""SAE comparison data: the eval.json numbers with their 95 % intervals, as the /compare page and
`GET /api/saes/{sae}/metrics` show them (no server paths)."""

from __future__ import annotations

import math
from pathlib import PurePath
from typing import Any

METRICS = ("l0", "fvu", "explained_variance", "delta_lm_loss", "ce_score", "kl_div", "ce_clean", "ce_sae",
           "ce_zero_ablation", "mse", "dead_fraction", "dense_fraction")
WITH_INTERVALS = ("fvu", "explained_variance", "delta_lm_loss", "ce_score", "kl_div", "l0")
COUNTS = ("tokens", "contexts", "context_size", "predictions", "d_sae", "dead_over_tokens")
SPLIT_KEYS = ("part", "holdout_every", "documents", "rows", "contexts", "context_size", "tokens", "scored_tokens",
              "predictions", "disjoint_from_training")


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def _interval(v: Any) -> list[float] | None:
    if isinstance(v, list | tuple) and len(v) == 2:
        lo, hi = _number(v[0]), _number(v[1])
        if lo is not None and hi is not None:
            return [lo, hi]
    return None


def metrics_view(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    """The comparable numbers of an eval.json: each metric, `<metric>_ci` where recorded, counts, the held-out
    split (corpus by file name only) and the bootstrap settings. None when there are no metrics."""
    if not metrics or _number(metrics.get("l0")) is None:
        return None
    out: dict[str, Any] = {k: _number(metrics.get(k)) for k in METRICS}
    for k in WITH_INTERVALS:
        out[f"{k}_ci"] = _interval(metrics.get(f"{k}_ci"))
    for k in COUNTS:
        if isinstance(metrics.get(k), int):
            out[k] = metrics[k]
    split = metrics.get("split")
    if isinstance(split, dict):
        view = {k: split[k] for k in SPLIT_KEYS if k in split}
        if isinstance(split.get("corpus"), str):
            view["corpus"] = split["corpus"] if split["corpus"].startswith("hf:") else PurePath(split["corpus"]).name
        out["split"] = view
    else:
        out["split"] = None
    boot = metrics.get("bootstrap")
    out["bootstrap"] = boot if isinstance(boot, dict) else None
    return out
