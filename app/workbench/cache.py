"""A sample's cached quantities for one SAE: everything the what-if and the dial reuse between requests.

Built once per SAE (three passes over the sample: one clean forward that records the hook activations h, one
with the SAE's reconstruction spliced in, both with SPEC §3's definitions as in app.training.evaluate):

- h at the non-special positions, the pre-activations `pre` and the baseline reconstruction x̂ with the stored θ;
- the FVU's parts: Σ‖h − x̂‖² and Σ‖h − mean(h)‖² (app.training.metrics.FVUAccumulator);
- per context, the summed next-token NLL of the clean and of the spliced model over counted predictions.

A changed θ only changes which (position, latent) pairs are active, so L0 and FVU follow from `pre` without an
LM call; ΔLM loss re-runs the spliced LM on the contexts whose reconstruction changed, from the hook on for
resid_post / resid_pre hooks (app/workbench/forward.py: the blocks before the hook are skipped; checked once
against the whole spliced forward, which is used otherwise).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from app.lm.hooks import intervene, parse_hook_name
from app.lm.model import LanguageModel
from app.lm.outliers import OUTLIER_FACTOR, check_factor, keep_mask, outlier_record, reference_norm
from app.sae.jumprelu import JumpReLUSAE
from app.training.metrics import FVUAccumulator
from app.workbench.forward import block_returns_tuple, logits_from_hook, skips_prefix

log = logging.getLogger(__name__)


@dataclass
class SampleCache:
    """Cached activations and baseline sums of one SAE on one sample (see the module docstring)."""

    contexts: torch.Tensor  # int64 [B, T] token ids
    special: torch.Tensor  # bool [B, T] excluded (special tokens, outlier norms): never spliced, never counted
    counted: torch.Tensor  # bool [B, T] positions whose next-token prediction is scored
    h_full: torch.Tensor  # [B, T, d_in] hook activations (LM dtype)
    h: torch.Tensor  # float32 [N, d_in] at the kept positions (row-major order)
    context_of: torch.Tensor  # int64 [N] context of each of those positions
    pre: torch.Tensor  # float32 [N, d_sae] pre-activations
    theta: torch.Tensor  # float32 [d_sae] the stored θ the baseline uses
    x_hat: torch.Tensor  # float32 [N, d_in] baseline reconstruction
    sse: float  # Σ‖h − x̂‖² (float64)
    total_variance: float  # Σ‖h − mean(h)‖² (float64)
    active: int  # Σ over positions of the number of active latents
    nll_clean: torch.Tensor  # float64 [B] summed NLL of the clean model per context
    nll_sae: torch.Tensor  # float64 [B] ... with the reconstruction spliced in
    predictions: int  # counted predictions
    split: dict[str, Any] = field(default_factory=dict)  # where the sample came from
    build_seconds: float = 0.0
    skip_prefix: bool = False  # LM forwards start at the hook (verified at build time)
    outliers: dict[str, Any] = field(default_factory=dict)  # the exclusion rule used (app/lm/outliers.py)
    block_tuple: bool = False  # the model's blocks return tuples

    @property
    def n_tokens(self) -> int:
        return int(self.h.shape[0])

    def baseline(self) -> dict[str, float]:
        """L0, FVU, CE clean / spliced and ΔLM loss with the stored θ (SPEC §3)."""
        n = max(self.predictions, 1)
        ce_clean, ce_sae = float(self.nll_clean.sum()) / n, float(self.nll_sae.sum()) / n
        return {"l0": self.active / self.n_tokens, "fvu": self.sse / self.total_variance, "ce_clean": ce_clean,
                "ce_sae": ce_sae, "delta_lm_loss": ce_sae - ce_clean}


def context_nll(logits: torch.Tensor, ids: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
    """float64 [B]: Σ over counted positions t of −log p(ids[t + 1] | ids[≤ t]) (evaluate.py's CE, per context)."""
    logp = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1)
    targets = torch.roll(ids, -1, dims=1)
    nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).double()
    return (nll * counted).sum(1)


def outlier_rule(sae: JumpReLUSAE) -> tuple[float, float | None]:
    """(factor, reference norm) recorded in the SAE's metadata by training, else (default factor, None)."""
    recorded = sae.cfg.metadata.get("outliers")
    if isinstance(recorded, dict) and isinstance(recorded.get("factor"), int | float):
        ref = recorded.get("reference_norm")
        return float(recorded["factor"]), float(ref) if isinstance(ref, int | float) and ref > 0 else None
    return OUTLIER_FACTOR, None


def decoder_rows(sae: JumpReLUSAE) -> torch.Tensor:
    """W_dec in raw activation units (what one unit of f_i adds to x̂)."""
    return sae.W_dec / sae.input_scale


@torch.no_grad()
def spliced_nll(lm: LanguageModel, sae: JumpReLUSAE, cache: SampleCache, ctx: torch.Tensor,
                x_hat_rows: torch.Tensor, batch_size: int = 16, skip: bool | None = None) -> torch.Tensor:
    """float64 [len(ctx)]: summed NLL per context with `x_hat_rows` (the reconstruction at those contexts'
    non-special positions, in cache order) spliced in at the hook. `skip`: start at the hook (default: the
    cache's verified choice)."""
    kind, layer = parse_hook_name(sae.cfg.metadata["hook_name"])
    out = torch.zeros(ctx.numel(), dtype=torch.float64)
    # positions of each wanted context inside the cached [N] order
    starts = torch.zeros(cache.contexts.shape[0] + 1, dtype=torch.long)
    starts[1:] = torch.cumsum((~cache.special).sum(1), 0)
    offset = 0
    for b in range(0, ctx.numel(), batch_size):
        sel = ctx[b:b + batch_size]
        n_rows = [int(starts[c + 1] - starts[c]) for c in sel.tolist()]
        rows = x_hat_rows[offset:offset + sum(n_rows)]
        offset += sum(n_rows)
        ids = cache.contexts[sel].to(lm.device)
        special = cache.special[sel].to(lm.device)
        full = cache.h_full[sel].clone()
        full[~special.cpu()] = rows.to(full.dtype)
        full = full.to(lm.device)
        logits = logits_from_hook(lm, kind, layer, ids, full, special, skip if skip is not None else
                                  cache.skip_prefix, cache.block_tuple)
        out[b:b + sel.numel()] = context_nll(logits, ids, cache.counted[sel].to(lm.device)).cpu()
    return out


def rows_of(cache: SampleCache, ctx: torch.Tensor) -> torch.Tensor:
    """Indices into the cached [N] positions of the given contexts, in cache order."""
    return torch.isin(cache.context_of, ctx).nonzero().squeeze(1)


@torch.no_grad()
def build_cache(lm: LanguageModel, sae: JumpReLUSAE, contexts: torch.Tensor, split: dict[str, Any] | None = None,
                batch_size: int = 16, outlier_factor: float | None = None,
                norm_ref: float | None = None) -> SampleCache:
    """Run the sample once (clean with h recorded, then spliced) and keep what the workbench reuses.

    Positions are excluded like `jumpscope eval` excludes them (app/lm/outliers.py): special tokens, and norms
    above factor × reference norm — by default the rule recorded in the SAE's metadata, else the default
    factor with the median norm of the sample's first batch."""
    t0 = time.perf_counter()
    hook = sae.cfg.metadata.get("hook_name")
    if not hook:
        raise ValueError("the SAE's metadata has no hook_name: the workbench cannot tell where it reads")
    kind, layer = parse_hook_name(hook)
    if contexts.ndim != 2 or contexts.shape[1] < 2 or contexts.shape[0] == 0:
        raise ValueError(f"the sample must be a non-empty [N, T≥2] tensor, got {tuple(contexts.shape)}")
    factor, norm_ref = outlier_rule(sae) if outlier_factor is None else (outlier_factor, norm_ref)
    check_factor(factor)
    h_parts, clean_parts, real_parts = [], [], []
    for b in range(0, contexts.shape[0], batch_size):
        ids = contexts[b:b + batch_size].to(lm.device)
        seen: dict[str, torch.Tensor] = {}

        def record(h: torch.Tensor, offset: int, seen=seen) -> torch.Tensor:
            seen["h"] = h
            return h

        with intervene(lm, kind, layer, record):
            logits = lm.model(input_ids=ids, use_cache=False).logits
        if norm_ref is None and factor > 0:
            norm_ref = reference_norm(lm, ids, seen["h"])
        real_b = keep_mask(lm, ids, seen["h"], factor, norm_ref)
        counted_b = real_b.clone()
        counted_b[:, -1] = False  # no next token to predict
        h_parts.append(seen["h"].detach().cpu())
        real_parts.append(real_b.cpu())
        clean_parts.append(context_nll(logits, ids, counted_b).cpu())
    h_full = torch.cat(h_parts)
    real = torch.cat(real_parts)
    special = ~real  # excluded positions (special tokens and outliers): never spliced, never counted
    counted = real.clone()
    counted[:, -1] = False
    h = h_full[real].float()
    if h.shape[0] == 0:
        raise ValueError("the sample holds only special tokens")
    context_of = torch.arange(contexts.shape[0]).view(-1, 1).expand_as(real)[real]
    pre = sae.pre_acts(h.to(sae.device)).float().cpu()
    theta = sae.threshold.detach().float().cpu()
    f = pre * (pre > theta)
    x_hat = sae.decode(f.to(sae.device)).float().cpu()
    fvu = FVUAccumulator()
    fvu.update(h, x_hat)
    cache = SampleCache(contexts=contexts.cpu(), special=special.cpu(), counted=counted.cpu(), h_full=h_full,
                        h=h, context_of=context_of, pre=pre, theta=theta, x_hat=x_hat, sse=fvu.sse,
                        total_variance=float(fvu.m2.sum()), active=int((pre > theta).sum()),
                        nll_clean=torch.cat(clean_parts), nll_sae=torch.zeros(contexts.shape[0], dtype=torch.float64),
                        predictions=int(counted.sum()), split=dict(split or {}),
                        outliers=outlier_record(factor, norm_ref, int((real != ~lm.special_mask(contexts)).sum())))
    every = torch.arange(contexts.shape[0])
    cache.nll_sae = spliced_nll(lm, sae, cache, every, x_hat, batch_size, skip=False)
    if skips_prefix(kind, layer):
        cache.block_tuple = block_returns_tuple(lm, contexts)
        fast = spliced_nll(lm, sae, cache, every, x_hat, batch_size, skip=True)
        if torch.allclose(fast, cache.nll_sae, rtol=1e-6, atol=1e-5):
            cache.skip_prefix, cache.nll_sae = True, fast
        else:
            log.warning("forwards from the hook disagree with whole forwards (max |Δ| %.3g): using whole forwards",
                        float((fast - cache.nll_sae).abs().max()))
    cache.build_seconds = time.perf_counter() - t0
    log.info("workbench sample: %d contexts, %d tokens, cached in %.2f s", contexts.shape[0], cache.n_tokens,
             cache.build_seconds)
    return cache
