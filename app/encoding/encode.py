"""Encode a text into active SAE latents per token (the inspect view and POST /api/encode)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from app.lm.chat import chat_prompt
from app.lm.hooks import capture, capture_many, hook_name, hook_of
from app.lm.model import LanguageModel
from app.sae.jumprelu import JumpReLUSAE


class InputTooLong(ValueError):
    """A prompt longer than the configured or the model's limit (the web layer answers 422)."""


def prompt_ids(lm: LanguageModel, text: str, max_tokens: int, extra: int = 0) -> list[int]:
    """Token ids of `text` with exactly one BOS first; InputTooLong past `max_tokens` or the model context.

    A text that already starts with the BOS token (a chat-formatted prompt: `<|im_start|>…` on SmolLM2, `<bos>…`
    on Gemma) gets no second one.
    """
    if not text.strip():
        raise ValueError("the text is empty; type something to analyse")
    ids = lm.token_ids(text, prepend_bos=False)
    bos = lm.tokenizer.bos_token_id
    if bos is not None and (not ids or ids[0] != bos):
        ids = [bos, *ids]
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
def sae_latents(sae: JumpReLUSAE, h: torch.Tensor, special: torch.Tensor) -> torch.Tensor:
    """Latents f [T, d_sae] of the SAE on hook activations h [T, d]; special positions get none (f = 0 there),
    as in training. Where a latent is active (pre > θ), f = pre, so its margin pre − θ is f − θ."""
    f = sae.encode(h.to(sae.device))
    f[special.to(f.device)] = 0.0
    return f


def token_latents(f: torch.Tensor, theta: torch.Tensor, top_k: int) -> list[list[dict]]:
    """Per token, its (at most `top_k`) active latents by value: {latent, value = f_i, margin = pre − θ}."""
    vals, idx = f.topk(min(top_k, f.shape[-1]), dim=-1)  # [T, k]
    margins = vals - theta[idx]
    # One conversion to Python lists, then plain loops (per-element tensor ops are slow).
    return [
        [{"latent": i, "value": v, "margin": m} for v, i, m in zip(vr, ir, mr) if v > 0]
        for vr, ir, mr in zip(vals.tolist(), idx.tolist(), margins.tolist())
    ]


def prompt_top_latents(f: torch.Tensor, active: torch.Tensor, top_k: int) -> list[dict]:
    """The `top_k` latents with the largest max over the prompt: {latent, max, count, values on every token}."""
    top_vals, top_idx = f.amax(0).topk(min(top_k, f.shape[-1]))  # amax: no argmax work (max(0) is ~25x slower)
    keep = top_vals > 0
    top_vals, top_idx = top_vals[keep], top_idx[keep]
    return [
        {"latent": i, "max": m, "count": c, "values": col}
        for i, m, c, col in zip(top_idx.tolist(), top_vals.tolist(), active[:, top_idx].sum(0).tolist(),
                                f[:, top_idx].T.tolist())
    ]


@torch.no_grad()
def sae_view(sae: JumpReLUSAE, h: torch.Tensor, special: torch.Tensor, top_k: int) -> dict[str, Any]:
    """One SAE's part of an encode answer: `l0`, `latents_per_token` and `top_latents` for hook activations h."""
    f = sae_latents(sae, h, special)
    active = f > 0
    return {
        "l0": active.sum(-1).tolist(),
        "latents_per_token": token_latents(f, sae.threshold.detach(), top_k),
        "top_latents": prompt_top_latents(f, active, top_k),
    }


def _tokens_view(lm: LanguageModel, ids: list[int], special: torch.Tensor) -> dict[str, Any]:
    return {"tokens": lm.token_strs(ids), "token_ids": ids, "special": special.tolist()}


@torch.no_grad()
def encode_text(lm: LanguageModel, sae: JumpReLUSAE, text: str, top_k: int = 16,
                max_tokens: int = 512, chat: bool = False) -> dict[str, Any]:
    """Tokens with their active latents (value = f_i, margin = pre − θ) and the prompt's top latents.

    Special tokens (BOS/EOS/PAD) get no latents and never count towards the prompt summary, as in training.
    `top_latents` holds, for the `top_k` latents with the largest max, the value on every token (colouring).
    With `chat`, the text is first wrapped as a user turn in the model's chat template (`chat_prompt`).
    """
    ids = prompt_ids(lm, chat_prompt(lm, text) if chat else text, max_tokens)
    special = lm.special_mask(torch.tensor(ids))
    h = capture(lm, torch.tensor([ids]), None, *hook_of(sae))[0]
    return {**_tokens_view(lm, ids, special), **sae_view(sae, h, special, top_k)}


@torch.no_grad()
def encode_many(lm: LanguageModel, saes: Mapping[str, JumpReLUSAE], text: str, top_k: int = 16,
                max_tokens: int = 512, chat: bool = False) -> dict[str, Any]:
    """The text through several SAEs of one model: every hook captured in ONE forward pass (stopped after the
    deepest hook), then each SAE encoded. `per_sae[id]` holds `hook` and `encode_text`'s per-SAE fields."""
    if not saes:
        raise ValueError("choose at least one SAE")
    ids = prompt_ids(lm, chat_prompt(lm, text) if chat else text, max_tokens)
    special = lm.special_mask(torch.tensor(ids))
    hooks = {sae_id: hook_name(*hook_of(sae)) for sae_id, sae in saes.items()}
    acts = capture_many(lm, torch.tensor([ids]), None, hooks.values())
    per_sae = {sae_id: {"hook": hooks[sae_id], **sae_view(sae, acts[hooks[sae_id]][0], special, top_k)}
               for sae_id, sae in saes.items()}
    return {**_tokens_view(lm, ids, special), "per_sae": per_sae}
