"""Test helpers for steering and web tests: a random JumpReLU SAE on the tiny Llama's layer-1 residual."""

from __future__ import annotations

import torch

from app.sae import JumpReLUSAE

HOOK = "blocks.1.hook_resid_post"


def make_sae(d_in: int, d_sae: int = 64, seed: int = 0, threshold: float = 0.05) -> JumpReLUSAE:
    """A random SAE whose latents fire on some tokens (small thresholds, random biases)."""
    sae = JumpReLUSAE.create(d_in, d_sae, threshold=threshold, seed=seed,
                             metadata={"model_name": "tiny", "hook_name": HOOK, "context_size": 64})
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        sae.b_dec.copy_(torch.randn(d_in, generator=gen) * 0.1)
        sae.W_dec.mul_(1.0 + torch.rand(d_sae, 1, generator=gen))  # non-unit rows, so add ≠ clamp
    return sae
