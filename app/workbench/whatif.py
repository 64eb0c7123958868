"""What if latent i had threshold θ'? Its density, and the change in L0, FVU and ΔLM loss on the cached sample.

Only latent i changes. With p = pre_i, its activation moves from f = p·H(p − θ_i) to f' = p·H(p − θ'), so per
position δ = f' − f and x̂' = x̂ + δ·d_i (d_i = W_dec[i] in raw units):

    L0 change  = (Σ H(p − θ') − Σ H(p − θ_i)) / N
    FVU change = (Σ‖r − δ·d_i‖² − Σ‖r‖²) / Σ‖h − mean(h)‖²  = (‖d_i‖²·Σδ² − 2·Σ δ·(r·d_i)) / Σ‖h − mean(h)‖²

with r = h − x̂ (a rank-1 update over the positions where δ ≠ 0), and ΔLM loss change = CE_sae' − CE_sae from
spliced LM forwards of the contexts where δ ≠ 0 only (the clean CE cancels).
"""

from __future__ import annotations

from typing import Any

import torch

from app.index.windows import greedy_windows
from app.lm.model import LanguageModel
from app.sae.jumprelu import JumpReLUSAE
from app.workbench.cache import SampleCache, decoder_rows, rows_of, spliced_nll

NEAR_MISSES = 5  # near misses listed per what-if
WINDOW_BEFORE, WINDOW_AFTER = 8, 4  # tokens shown around a near miss


class UnknownLatentIndex(IndexError):
    """The latent number is outside 0..d_sae−1."""


def check_threshold(threshold: float) -> float:
    """θ' as a float: finite and ≥ 0 (ValueError otherwise)."""
    t = float(threshold)
    if not t == t or t in (float("inf"), float("-inf")) or t < 0:
        raise ValueError(f"threshold must be a finite number ≥ 0, got {threshold!r}")
    return t


@torch.no_grad()
def what_if(lm: LanguageModel, sae: JumpReLUSAE, cache: SampleCache, latent: int, threshold: float,
            lm_loss: bool = True, near: int = NEAR_MISSES) -> dict[str, Any]:
    """The what-if answer of SPEC §9 for latent `latent` at θ' = `threshold` (see the module docstring)."""
    if not 0 <= latent < sae.d_sae:
        raise UnknownLatentIndex(f"latent {latent} is out of range: this SAE has latents 0..{sae.d_sae - 1}")
    theta_new = float(torch.tensor(check_threshold(threshold), dtype=sae.dtype))  # what the SAE can hold
    p = cache.pre[:, latent]
    theta_old = float(cache.theta[latent])
    on_old = p > cache.theta[latent]
    on_new = p > torch.tensor(theta_new, dtype=p.dtype)
    n = cache.n_tokens
    changed = (on_old != on_new).nonzero().squeeze(1)
    delta = (p[changed] * on_new[changed] - p[changed] * on_old[changed]).double()  # f' − f where it changed
    d_i = decoder_rows(sae)[latent].detach().double().cpu()
    resid = (cache.h[changed].double() - cache.x_hat[changed].double())
    sse_change = float(d_i.dot(d_i) * delta.pow(2).sum() - 2.0 * (delta * (resid @ d_i)).sum())
    out: dict[str, Any] = {
        "latent": latent,
        "threshold": theta_new,
        "stored_threshold": theta_old,
        "density": float(on_new.sum()) / n,
        "stored_density": float(on_old.sum()) / n,
        "l0_change": (float(on_new.sum()) - float(on_old.sum())) / n,
        "fvu_change": sse_change / cache.total_variance,
        "delta_lm_loss_change": 0.0 if changed.numel() == 0 or not lm_loss else None,
        "changed_tokens": int(changed.numel()),
        "baseline": cache.baseline(),
        "sample": {"tokens": n, "contexts": int(cache.contexts.shape[0]), **cache.split},
    }
    if changed.numel() and lm_loss:
        ctx = torch.unique(cache.context_of[changed])
        rows = rows_of(cache, ctx)
        x_new = cache.x_hat[rows].double()
        pos_in_rows = torch.searchsorted(rows, changed)
        x_new[pos_in_rows] += delta.view(-1, 1) * d_i.view(1, -1)
        new = spliced_nll(lm, sae, cache, ctx, x_new.float())
        out["delta_lm_loss_change"] = float(new.sum() - cache.nll_sae[ctx].sum()) / max(cache.predictions, 1)
        out["rerun_contexts"] = int(ctx.numel())
    out["near_misses"] = near_misses(lm, cache, latent, theta_new, near)
    return out


def near_misses(lm: LanguageModel, cache: SampleCache, latent: int, threshold: float, k: int) -> list[dict[str, Any]]:
    """The k positions of the sample where latent's pre-activation is ≤ θ' and closest to it (non-overlapping
    windows), as {tokens, values, pre, center, max}; values are the activations at θ'."""
    if k <= 0:
        return []
    p = cache.pre[:, latent]
    cand = (p <= threshold).nonzero().squeeze(1)
    if cand.numel() == 0:
        return []
    t_len = cache.contexts.shape[1]
    real_pos = (~cache.special).reshape(-1).nonzero().squeeze(1)  # flat position of each cached row
    pos = real_pos[cand]
    kept = greedy_windows(cache.context_of[cand], pos, p[cand], WINDOW_BEFORE + WINDOW_AFTER, k)
    order = sorted(kept.tolist(), key=lambda j: (-float(p[cand[j]]), int(pos[j])))[:k]
    pre_full = torch.zeros(cache.contexts.numel())
    pre_full[real_pos] = p
    out = []
    for j in order:
        g = int(pos[j])
        c, t = divmod(g, t_len)
        lo, hi = max(0, t - WINDOW_BEFORE), min(t_len, t + WINDOW_AFTER + 1)
        ids = cache.contexts[c, lo:hi].tolist()
        pres = [float(v) for v in pre_full[c * t_len + lo:c * t_len + hi]]
        specials = cache.special[c, lo:hi].tolist()
        out.append({"tokens": lm.token_strs(ids), "token_ids": ids,
                    "pre": [0.0 if s else v for v, s in zip(pres, specials, strict=True)],
                    "values": [v if (v > threshold and not s) else 0.0 for v, s in zip(pres, specials, strict=True)],
                    "center": t - lo, "max": float(p[cand[j]])})
    return out
