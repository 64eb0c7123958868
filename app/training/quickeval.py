"""A run's held-out check for its summary: L0, FVU and dead latents of the saved SAE on held-out documents.

One capture pass (no splicing, so no CE numbers) over the first `HELD_OUT_TOKENS` tokens of the documents
training held out, with the definitions of app/training/evaluate.py (SPEC §3) and the outlier rule recorded
in the SAE's metadata. `jumpscope eval --sae DIR --tokens 4096` scores the same contexts (same split, seed 0)
and reports the same L0, FVU and dead fraction, plus the CE-based metrics and bootstrap intervals.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from app.training.metrics import FVUAccumulator, LatentStats, finite_or_none

log = logging.getLogger(__name__)

HELD_OUT_TOKENS = 4096  # tokens scored for the summary (cheap next to training)
HELD_OUT_SEED = 0  # the context shuffle of `jumpscope eval`'s default --seed


@torch.no_grad()
def held_out_check(lm: Any, sae_folder: str | Path, corpus: str, holdout_every: int, context_size: int,
                   batch_size: int = 8, n_tokens: int = HELD_OUT_TOKENS) -> dict[str, Any] | None:
    """{l0, fvu, dead_fraction, tokens, contexts} on held-out documents; None when none are held out."""
    from app.lm.corpus import load_split
    from app.lm.hooks import capture, parse_hook_name
    from app.lm.outliers import keep_mask
    from app.sae import load_sae

    if holdout_every <= 0:
        return None
    sae = load_sae(sae_folder).to(lm.device)
    meta = sae.cfg.metadata
    kind, layer = parse_hook_name(meta["hook_name"])
    rule = meta.get("outliers") or {}
    factor, norm_ref = float(rule.get("factor") or 0.0), rule.get("reference_norm")
    try:
        contexts, _ = load_split(lm, corpus, context_size, n_tokens=n_tokens, seed=HELD_OUT_SEED, part="held_out",
                                 holdout_every=holdout_every)
    except ValueError as e:  # too few held-out documents for one context
        log.warning("no held-out check in the summary: %s", e)
        return None
    stats, fvu, theta = LatentStats(sae.d_sae, dead_window=1), FVUAccumulator(), sae.threshold
    for lo in range(0, contexts.shape[0], batch_size):
        ids = contexts[lo: lo + batch_size].to(lm.device)
        h = capture(lm, ids, None, kind, layer)
        real = keep_mask(lm, ids, h, factor, norm_ref)
        pre = sae.pre_acts(h)
        active = pre > theta
        x_hat = sae.decode(pre * active).to(h.dtype)
        stats.update(active[real])
        fvu.update(h[real], x_hat[real])
    stats.dead_window = max(int(stats.tokens), 1)
    return {"l0": stats.l0(), "fvu": finite_or_none(fvu.fvu()), "dead_fraction": stats.dead_fraction(),
            "tokens": int(stats.tokens), "contexts": int(contexts.shape[0]), "corpus": corpus,
            "part": "held_out", "holdout_every": holdout_every, "seed": HELD_OUT_SEED}
