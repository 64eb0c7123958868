"""Logit effects of each latent's decoder direction: W_dec[i] @ W_U, through the final norm's gain.

Final norm, per family (the choice JumpScope makes; documented in README "Index"):
* RMSNorm families (Llama, Mistral, Qwen, Gemma …): the per-dimension gain is read by applying the norm
  module to a vector of ones (rms = 1), which yields `weight` for Llama-style norms and `1 + weight` for
  Gemma's — no family special case needed. The input-dependent 1/rms scale is left out (it only rescales).
* LayerNorm families (GPT-2, GPT-NeoX): the direction is centred (LayerNorm removes the mean) and multiplied
  by `weight`; the bias is a constant offset shared by all latents and is left out.
Gemma 2's final logit soft-capping is monotone and is not applied.
"""

from __future__ import annotations

import torch
from torch import nn

from app.lm.model import LanguageModel


@torch.no_grad()
def norm_gain(norm: nn.Module, d_model: int, device: torch.device) -> tuple[torch.Tensor, bool]:
    """(per-dimension gain [d_model] as float32, whether directions are centred first)."""
    if isinstance(norm, nn.LayerNorm):
        w = norm.weight if norm.weight is not None else torch.ones(d_model, device=device)
        return w.detach().float().to(device), True
    weight = getattr(norm, "weight", None)
    dtype = weight.dtype if isinstance(weight, torch.Tensor) else torch.float32
    ones = torch.ones(1, d_model, device=device, dtype=dtype)
    return norm(ones).float().reshape(-1).to(device), False


@torch.no_grad()
def logit_effects(lm: LanguageModel, w_dec: torch.Tensor, n: int, chunk_elems: int = 1 << 25):
    """Top and bottom `n` logit effects per latent: (top_ids, top_vals, bot_ids, bot_vals), each [d_sae, n].

    Computed over latent chunks so at most `chunk_elems` logits are in memory at once.
    """
    device = lm.device
    w_u = lm.unembed.detach().float().to(device)  # [d_model, vocab]
    gain, centre = norm_gain(lm.final_norm, lm.d_model, device)
    vocab = w_u.shape[1]
    n = min(n, vocab)
    rows = max(1, chunk_elems // vocab)
    outs: list[list[torch.Tensor]] = [[], [], [], []]
    for lo in range(0, w_dec.shape[0], rows):
        d = w_dec[lo:lo + rows].to(device=device, dtype=torch.float32)
        if centre:
            d = d - d.mean(-1, keepdim=True)
        eff = (d * gain) @ w_u
        top = eff.topk(n, dim=1)
        bot = eff.topk(n, dim=1, largest=False)
        for o, t in zip(outs, (top.indices, top.values, bot.indices, bot.values), strict=True):
            o.append(t.cpu())
    return tuple(torch.cat(o) for o in outs)
