"""Test helpers for steering, encoding and web tests: a random JumpReLU SAE on the tiny Llama's layer-1 residual."""

from __future__ import annotations

import torch

from app.sae import JumpReLUSAE

HOOK = "blocks.1.hook_resid_post"


def make_sae(d_in: int, d_sae: int = 64, seed: int = 0, threshold: float = 0.05, hook: str = HOOK) -> JumpReLUSAE:
    """A random SAE whose latents fire on some tokens (small thresholds, random biases)."""
    sae = JumpReLUSAE.create(d_in, d_sae, threshold=threshold, seed=seed,
                             metadata={"model_name": "tiny", "hook_name": hook, "context_size": 64})
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        sae.b_dec.copy_(torch.randn(d_in, generator=gen) * 0.1)
        sae.W_dec.mul_(1.0 + torch.rand(d_sae, 1, generator=gen))  # non-unit rows, so add ≠ clamp
    return sae


# Several SAEs of the tiny Llama at different layers and hook kinds (multi-SAE encode, steering, attribution),
# each with a threshold near its hook's activation scale (attn/mlp outputs are ~10x smaller than the residual).
MULTI_HOOKS = {"l0-post": ("blocks.0.hook_resid_post", 0.02), "l1-attn": ("blocks.1.hook_attn_out", 0.005),
               "l2-pre": ("blocks.2.hook_resid_pre", 0.02), "l2-mlp": ("blocks.2.hook_mlp_out", 0.0015)}


def make_saes(d_in: int, hooks: dict[str, tuple[str, float]] = MULTI_HOOKS, d_sae: int = 64) -> dict[str, JumpReLUSAE]:
    """One random SAE per (hook, threshold), each with its own seed."""
    return {sae_id: make_sae(d_in, d_sae, seed=10 + k, threshold=threshold, hook=hook)
            for k, (sae_id, (hook, threshold)) in enumerate(hooks.items())}
