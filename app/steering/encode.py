"""Encode a text into active SAE latents per token (the inspect view and POST /api/encode)."""

from __future__ import annotations

from typing import Any

import torch

from app.lm.hooks import capture
from app.lm.model import LanguageModel
from app.sae.jumprelu import JumpReLUSAE
from app.steering.interventions import hook_of


class InputTooLong(ValueError):
    """A prompt longer than the configured or the model's limit (the web layer answers 422)."""


def prompt_ids(lm: LanguageModel, text: str, max_tokens: int, extra: int = 0) -> list[int]:
    """Token ids of `text` with one BOS first; InputTooLong past `max_tokens` or the model context."""
    if not text.strip():
        raise ValueError("the text is empty; type something to analyse")
    ids = lm.token_ids(text, prepend_bos=True)
    if len(ids) > max_tokens:
        raise InputTooLong(f"the text is {len(ids)} tokens long; the limit is {max_tokens} tokens")
    limit = lm.max_positions
    if limit is not None and len(ids) + extra > limit:
        raise InputTooLong(
            f"{len(ids)} prompt tokens + {extra} new tokens exceed the model's context of {limit} positions"
        )
    return ids


def bos_prefix(lm: LanguageModel, ids: list[int]) -> int:
    """How many leading positions are BOS (never steered, never counted): 1 or 0."""
    bos = lm.tokenizer.bos_token_id
    return 1 if ids and bos is not None and ids[0] == bos else 0


@torch.no_grad()
def sae_latents(lm: LanguageModel, sae: JumpReLUSAE, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(pre-activations, latents) [T, d_sae] of the SAE on the hook activations of `ids`."""
    kind, layer = hook_of(sae)
    h = capture(lm, torch.tensor([ids]), None, kind, layer)[0]
    pre = sae.pre_acts(h.to(sae.device))
    theta = sae.threshold.detach()
    return pre, pre * (pre > theta)


@torch.no_grad()
def encode_text(lm: LanguageModel, sae: JumpReLUSAE, text: str, top_k: int = 16,
                max_tokens: int = 512) -> dict[str, Any]:
    """Tokens with their active latents (value = f_i, margin = pre − θ) and the prompt's top latents.

    Special tokens (BOS/EOS/PAD) get no latents and never count towards the prompt summary, as in training.
    `top_latents` holds, for the `top_k` latents with the largest max, the value on every token (colouring).
    """
    ids = prompt_ids(lm, text, max_tokens)
    pre, f = sae_latents(lm, sae, ids)
    special = lm.special_mask(torch.tensor(ids)).to(f.device)
    f = f.masked_fill(special[:, None], 0.0)
    theta = sae.threshold.detach()
    k = min(top_k, sae.d_sae)
    vals, idx = f.topk(k, dim=-1)  # [T, k]
    margins = pre.gather(1, idx) - theta[idx]
    # One conversion to Python lists, then plain loops (per-element tensor ops are slow).
    vals_l, idx_l, marg_l = vals.tolist(), idx.tolist(), margins.tolist()
    per_token = [
        [{"latent": i, "value": v, "margin": m} for v, i, m in zip(vr, ir, mr) if v > 0]
        for vr, ir, mr in zip(vals_l, idx_l, marg_l)
    ]
    active = f > 0
    counts = active.sum(0)  # [d_sae]
    top_vals, top_idx = f.max(0).values.topk(k)
    keep = top_vals > 0
    top_vals, top_idx = top_vals[keep], top_idx[keep]
    top_latents = [
        {"latent": i, "max": m, "count": c, "values": col}
        for i, m, c, col in zip(top_idx.tolist(), top_vals.tolist(), counts[top_idx].tolist(),
                                f[:, top_idx].T.tolist())
    ]
    return {
        "tokens": lm.token_strs(ids),
        "token_ids": ids,
        "special": special.tolist(),
        "l0": active.sum(-1).tolist(),
        "latents_per_token": per_token,
        "top_latents": top_latents,
    }
