"""What the SAE weights alone say about a latent: threshold, logit effects, decoder neighbours.

Used when a latent's SAE has no index yet, so a dashboard still shows something true.
"""

from __future__ import annotations

from typing import Any

import torch

from app.lm.model import LanguageModel
from app.sae.jumprelu import JumpReLUSAE
from app.steering.interventions import UnknownLatent


@torch.no_grad()
def latent_weights_summary(lm: LanguageModel, sae: JumpReLUSAE, latent: int,
                           log10_density: torch.Tensor | None = None, n_logits: int = 10,
                           n_neighbors: int = 10) -> dict[str, Any]:
    """Threshold, density (from sparsity.safetensors if any), top/bottom logits of W_dec[i] @ W_U and the
    nearest latents by decoder cosine, in the dashboard's key layout (examples and histogram empty)."""
    if not 0 <= latent < sae.d_sae:
        raise UnknownLatent(f"latent {latent} does not exist: this SAE has latents 0..{sae.d_sae - 1}")
    w_dec = sae.W_dec.detach().float()
    d = w_dec[latent]
    w_u = lm.unembed.detach().float().to(d.device)
    logits = d @ w_u if w_u.shape[0] == d.shape[0] else None
    tok = lm.tokenizer.decode

    def table(values: torch.Tensor, ids: torch.Tensor) -> list[dict[str, Any]]:
        return [{"token": tok([int(i)]), "value": float(v)} for v, i in zip(values.tolist(), ids.tolist())]

    top = bottom = []
    if logits is not None:
        k = min(n_logits, logits.numel())
        top = table(*logits.topk(k))
        v, i = (-logits).topk(k)
        bottom = table(-v, i)
    unit = w_dec / w_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    cos = unit @ unit[latent]
    cos[latent] = -2.0  # never its own neighbour
    k = min(n_neighbors, sae.d_sae - 1)
    nv, ni = cos.topk(k)
    density = None
    if log10_density is not None and latent < log10_density.numel():
        density = float(10.0 ** log10_density[latent].float())
    return {
        "latent": latent,
        "threshold": float(sae.threshold[latent]),
        "density": density,
        "count": None,
        "tokens_seen": None,
        "max": None,
        "mean": None,
        "histogram": None,
        "top_examples": [],
        "interval_examples": [],
        "top_logits": top,
        "bottom_logits": bottom,
        "neighbors": [{"latent": int(i), "cosine": float(v)} for v, i in zip(nv.tolist(), ni.tolist())],
        "explanation": None,
        "indexed": False,
    }
