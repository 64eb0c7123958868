"""Logit effects of residual-stream directions: d through the final norm's per-dimension gain, then @ W_U.

The one definition JumpScope uses for a latent's "top / bottom logits" (index and weight-only dashboards
alike; docs/index_algorithm.md). Final norm, per family:
* RMSNorm families (Llama, Mistral, Qwen, Gemma …): the per-dimension gain is read by applying the norm
  module (a float32 copy) to a constant vector, which yields `weight` for Llama-style norms and `1 + weight`
  for Gemma's — no family special case needed. The input-dependent 1/rms scale is left out (it only
  rescales); the constant is large enough that the norm's eps does not show in float32.
* LayerNorm families (GPT-2, GPT-NeoX): the direction is centred (LayerNorm removes the mean) and multiplied
  by `weight`; the bias is a constant offset shared by all directions and is left out.
Gemma 2's final logit soft-capping is monotone and is not applied.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
from torch import nn

from app.lm.model import LanguageModel

_PROBE = 64.0  # rms of the probe vector: c / sqrt(c² + eps) == 1 in float32 for any eps ≤ 1e-3


class LogitEffects(NamedTuple):
    """Top and bottom logit effects, each [rows, n] on the CPU, best first (bottom: most negative first)."""

    top_ids: torch.Tensor
    top_vals: torch.Tensor
    bot_ids: torch.Tensor
    bot_vals: torch.Tensor


@torch.no_grad()
def norm_gain(norm: nn.Module, d_model: int, device: torch.device) -> tuple[torch.Tensor, bool]:
    """(per-dimension gain [d_model] as float32, whether directions are centred first)."""
    if isinstance(norm, nn.LayerNorm):
        w = norm.weight if norm.weight is not None else torch.ones(d_model)
        return w.detach().float().to(device), True
    probe = copy.deepcopy(norm).float()  # the gain at full precision, whatever the model's dtype
    param = next(probe.parameters(), None)
    x = torch.full((1, d_model), _PROBE, device=param.device if param is not None else device)
    return probe(x).float().reshape(-1).to(device), False  # (c / rms(c)) · gain = gain


@torch.no_grad()
def logit_effects(lm: LanguageModel, w_dec_rows: torch.Tensor, n: int, chunk_elems: int = 1 << 25) -> LogitEffects:
    """Top and bottom `n` logit effects of each row of `w_dec_rows` [rows, d_model] (decoder directions in
    the LM's residual units), through the final norm's gain (module docstring).

    Computed over row chunks so at most `chunk_elems` logits are in memory at once (never rows × vocab).
    """
    device = lm.device
    if w_dec_rows.dim() != 2 or w_dec_rows.shape[1] != lm.d_model:
        raise ValueError(f"directions of shape {tuple(w_dec_rows.shape)} do not fit the model's width {lm.d_model}")
    w_u = lm.unembed.detach().float().to(device)  # [d_model, vocab]
    gain, centre = norm_gain(lm.final_norm, lm.d_model, device)
    vocab = w_u.shape[1]
    n = min(n, vocab)
    rows = max(1, chunk_elems // vocab)
    outs: list[list[torch.Tensor]] = [[], [], [], []]
    for lo in range(0, w_dec_rows.shape[0], rows):
        d = w_dec_rows[lo:lo + rows].to(device=device, dtype=torch.float32)
        if centre:
            d = d - d.mean(-1, keepdim=True)
        eff = (d * gain) @ w_u
        top = eff.topk(n, dim=1)
        bot = eff.topk(n, dim=1, largest=False)
        for o, t in zip(outs, (top.indices, top.values, bot.indices, bot.values), strict=True):
            o.append(t.cpu())
    if not outs[0]:
        empty = torch.empty(0, n)
        return LogitEffects(empty.long(), empty, empty.long(), empty)
    return LogitEffects(*(torch.cat(o) for o in outs))
