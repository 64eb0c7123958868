"""Evaluate an SAE on a language model (issue 3 item 5), with SPEC §3's metric definitions.

For every batch of contexts the LM runs three times: clean (the hook's activations h are recorded), with the
SAE's reconstruction x̂(h) spliced in at the hook, and with h zero-ablated. Excluded positions — special tokens
(BOS/EOS/PAD) and outlier-norm positions, by the rule training and the index share (app/lm/outliers.py; the
reference norm is the median over the first batch unless given) — are never spliced or ablated and never counted:

- L0, density, dead / dense latents, FVU: over the non-special tokens' activations at the hook.
  FVU = Σ‖h − x̂‖² / Σ‖h − mean(h)‖² with the per-dimension mean over the whole evaluation set.
- CE: next-token cross-entropy averaged over predictions made at non-special positions (the last position
  of each context has no target and is skipped). ΔLM loss = CE_sae − CE_clean;
  CE score = (CE_zero − CE_sae) / (CE_zero − CE_clean); KL(clean ‖ spliced) averaged over the same positions.
- Dead latents: never active over the N evaluated tokens (N reported as `dead_over_tokens`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from app.fsio import atomic_write_json
from app.lm.hooks import intervene, parse_hook_name
from app.lm.model import LanguageModel
from app.lm.outliers import OUTLIER_FACTOR, check_factor, keep_mask, outlier_record, reference_norm
from app.sae.jumprelu import JumpReLUSAE
from app.training.bootstrap import N_BOOT, ContextSums, bootstrap_intervals
from app.training.metrics import FVUAccumulator, LatentStats, density_histogram, finite_or_none

log = logging.getLogger(__name__)

EVAL_FILE = "eval.json"


def _wide(logits: torch.Tensor) -> torch.Tensor:
    """Logits in at least float32 (bf16/fp16 models), float64 kept as is."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


class _CEAccumulator:
    """float64 sums of clean / spliced / zero-ablated CE and KL(clean ‖ spliced) over counted positions."""

    def __init__(self) -> None:
        self.count = 0
        self.clean = self.sae = self.zero = self.kl = 0.0

    def update(self, clean: torch.Tensor, spliced: torch.Tensor, zero: torch.Tensor, targets: torch.Tensor,
               counted: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
        """Logits [B, T, V] of the three runs; targets [B, T] (next tokens); counted [B, T] bool.

        Returns the batch's per-context float64 sums [B, 5]: (predictions, nll clean, nll sae, nll zero, KL),
        which the bootstrap resamples. Rows are processed `chunk` positions at a time so the float32
        log-softmax temporaries stay small even for 256k-token vocabularies."""
        flat = [t.reshape(-1, t.shape[-1]) for t in (clean, spliced, zero)]
        where = counted.reshape(-1).nonzero().squeeze(1)
        tgt_all = targets.reshape(-1)[where]
        per_row = torch.zeros(counted.shape[0], 5, dtype=torch.float64, device=counted.device)
        for start in range(0, where.shape[0], chunk):
            idx = where[start : start + chunk]
            lp_clean, lp_sae, lp_zero = (F.log_softmax(_wide(t[idx]), -1) for t in flat)
            tgt = tgt_all[start : start + chunk].unsqueeze(-1)
            values = torch.stack([
                torch.ones(idx.shape[0], dtype=torch.float64, device=idx.device),
                -lp_clean.gather(-1, tgt).squeeze(-1).double(),
                -lp_sae.gather(-1, tgt).squeeze(-1).double(),
                -lp_zero.gather(-1, tgt).squeeze(-1).double(),
                (lp_clean.exp() * (lp_clean - lp_sae)).sum(-1, dtype=torch.float64),
            ], 1)
            per_row.index_add_(0, idx // counted.shape[1], values)
            totals = values.sum(0).tolist()
            self.count += int(tgt.shape[0])
            self.clean += totals[1]
            self.sae += totals[2]
            self.zero += totals[3]
            self.kl += totals[4]
        return per_row

    def means(self) -> dict[str, float]:
        n = max(self.count, 1)
        ce_clean, ce_sae, ce_zero = self.clean / n, self.sae / n, self.zero / n
        denom = ce_zero - ce_clean
        return {
            "ce_clean": ce_clean,
            "ce_sae": ce_sae,
            "ce_zero_ablation": ce_zero,
            "delta_lm_loss": ce_sae - ce_clean,
            "ce_score": (ce_zero - ce_sae) / denom if denom != 0 else math.nan,
            "kl_div": self.kl / n,
        }


def _logits(lm: LanguageModel, ids: torch.Tensor) -> torch.Tensor:
    return lm.model(input_ids=ids, use_cache=False).logits


@torch.no_grad()
def evaluate_sae(
    sae: JumpReLUSAE,
    lm: LanguageModel,
    contexts: torch.Tensor,
    batch_size: int = 8,
    hook: str | None = None,
    histogram_bins: int = 20,
    progress: Callable[[int, int], None] | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
    outlier_factor: float = OUTLIER_FACTOR,
    norm_ref: float | None = None,
) -> dict[str, Any]:
    """Metrics of `sae` spliced into `lm` over `contexts` (LongTensor [N, T], e.g. from load_contexts).

    `hook` defaults to the SAE's metadata `hook_name`. `progress(done, total)` is called after each batch.
    FVU, ΔLM loss, CE score and KL get 95 % bootstrap intervals over contexts (`<metric>_ci`, `n_boot`
    resamples drawn with `seed`; app/training/bootstrap.py); n_boot=0 skips them. Positions whose activation norm
    exceeds `outlier_factor` × `norm_ref` (default: the median norm of the first batch) are excluded like special
    tokens; `outliers` in the result records the rule and how many positions it excluded.
    Returns a JSON-able dict (NaN → None); see the module docstring for the definitions.
    """
    hook = hook or sae.cfg.metadata.get("hook_name")
    if not hook:
        raise ValueError("the SAE's metadata has no hook_name; pass the hook (e.g. blocks.6.hook_resid_post)")
    kind, layer = parse_hook_name(hook)
    if sae.d_in != lm.d_model:
        raise ValueError(f"SAE d_in {sae.d_in} does not match the model's d_model {lm.d_model}")
    if contexts.ndim != 2 or contexts.shape[1] < 2 or contexts.shape[0] == 0:
        raise ValueError(f"contexts must be a non-empty [N, T≥2] tensor of token ids, got {tuple(contexts.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    check_factor(outlier_factor)
    sae = sae.to(lm.device)
    special_all = lm.special_mask(contexts)
    n_real = int((~special_all).sum())
    if n_real == 0:
        raise ValueError("the contexts hold only special tokens")
    stats = LatentStats(sae.d_sae, dead_window=n_real)
    fvu = FVUAccumulator()
    ce = _CEAccumulator()
    per_context = ContextSums()
    theta = sae.threshold
    rule = {"norm_ref": norm_ref, "tokens": 0, "outliers": 0}

    def run_batch(ids: torch.Tensor, special: torch.Tensor) -> None:
        seen: dict[str, torch.Tensor] = {}

        def record(h: torch.Tensor, offset: int) -> torch.Tensor:
            seen["h"] = h
            return h

        def splice(h: torch.Tensor, offset: int) -> torch.Tensor:
            pre = sae.pre_acts(h)
            f = pre * (pre > theta)
            x_hat = sae.decode(f).to(h.dtype)
            seen["active"], seen["x_hat"] = pre > theta, x_hat
            return torch.where(keep, h, x_hat)

        def ablate(h: torch.Tensor, offset: int) -> torch.Tensor:
            return torch.where(keep, h, torch.zeros_like(h))

        with intervene(lm, kind, layer, record):
            clean = _logits(lm, ids)
        if rule["norm_ref"] is None and outlier_factor > 0:
            rule["norm_ref"] = reference_norm(lm, ids, seen["h"])
        real = keep_mask(lm, ids, seen["h"], outlier_factor, rule["norm_ref"])
        rule["outliers"] += int((real != ~special).sum())
        rule["tokens"] += int(real.sum())
        keep = (~real).unsqueeze(-1)  # positions left untouched by splicing / ablation
        with intervene(lm, kind, layer, splice):
            spliced = _logits(lm, ids)
        with intervene(lm, kind, layer, ablate):
            zero = _logits(lm, ids)
        stats.update(seen["active"][real])
        fvu.update(seen["h"][real], seen["x_hat"][real])
        per_context.add_activations(seen["h"], seen["x_hat"], real)
        counted = real.clone()
        counted[:, -1] = False  # no next token to predict
        targets = torch.roll(ids, -1, dims=1)
        per_context.add_predictions(ce.update(clean, spliced, zero, targets, counted))

    total = contexts.shape[0]
    for start in range(0, total, batch_size):
        ids = contexts[start : start + batch_size].to(lm.device)
        run_batch(ids, special_all[start : start + batch_size].to(lm.device))
        if progress is not None:
            progress(min(start + batch_size, total), total)

    n_tokens = rule["tokens"]
    if n_tokens == 0:
        raise ValueError("every non-special position of the contexts is an outlier (see --outlier-factor)")
    stats.dead_window = n_tokens  # dead = never active over the positions actually scored
    density = stats.density()
    result: dict[str, Any] = {
        "hook_name": hook,
        "contexts": total,
        "context_size": int(contexts.shape[1]),
        "tokens": n_tokens,
        "predictions": ce.count,
        "d_sae": sae.d_sae,
        "l0": stats.l0(),
        "fvu": fvu.fvu(),
        "explained_variance": fvu.explained_variance(),
        "mse": fvu.mse,
        **ce.means(),
        "dead_fraction": stats.dead_fraction(),
        "dead_over_tokens": n_tokens,
        "dense_fraction": stats.dense_fraction(),
        "density_histogram": density_histogram(density, bins=histogram_bins),
        "outliers": outlier_record(outlier_factor, rule["norm_ref"], rule["outliers"]),
    }
    if n_boot > 0:
        result.update(bootstrap_intervals(per_context, n_boot=n_boot, seed=seed))
        result["bootstrap"] = {"resamples": n_boot, "seed": seed, "level": 0.95, "unit": "context"}
    return {k: finite_or_none(v) if isinstance(v, float) else v for k, v in result.items()}


def save_eval(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write `result` as JSON atomically (temp file + fsync + os.replace)."""
    return atomic_write_json(path, result)


def format_summary(result: dict[str, Any]) -> str:
    """Human-readable lines for the CLI."""

    def num(key: str, fmt: str = ".4f") -> str:
        v = result.get(key)
        text = "n/a" if v is None else format(v, fmt)
        ci = result.get(f"{key}_ci")
        return text if not ci else f"{text} [{ci[0]:{fmt}}, {ci[1]:{fmt}}]"

    return "\n".join([
        f"hook {result['hook_name']}: {result['tokens']} tokens ({result['contexts']} contexts × "
        f"{result['context_size']}), {result['predictions']} next-token predictions",
        f"L0 {num('l0', '.2f')}   FVU {num('fvu')}   explained variance {num('explained_variance')}",
        f"CE clean {num('ce_clean')}   spliced {num('ce_sae')}   zero-ablated {num('ce_zero_ablation')}",
        f"ΔLM loss {num('delta_lm_loss')}   CE score {num('ce_score')}   KL(clean‖spliced) {num('kl_div')}",
        f"dead latents {num('dead_fraction', '.2%')} (never active over {result['dead_over_tokens']} tokens)   "
        f"dense latents {num('dense_fraction', '.2%')} (density > 10 %)",
        "log10 density histogram: " + _histogram_line(result["density_histogram"]),
    ])


def _histogram_line(hist: dict[str, Any]) -> str:
    edges, counts = hist["edges"], hist["counts"]
    parts = [f"[{edges[i]:g},{edges[i + 1]:g}):{c}" for i, c in enumerate(counts) if c]
    return " ".join(parts + [f"never:{hist.get('never', 0)}"])
