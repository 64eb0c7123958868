"""What the SAE weights alone say about a latent: threshold, logit effects, decoder neighbours.

Used when a latent's SAE has no index yet, so a dashboard still shows something true.
"""

from __future__ import annotations

from typing import Any

import torch

from app.lm.logit_lens import logit_effects
from app.lm.model import LanguageModel
from app.sae.errors import UnknownLatent
from app.sae.geometry import decoder_directions, decoder_neighbors
from app.sae.jumprelu import JumpReLUSAE

# sparsity.safetensors stores log10 density floored at log10(1e-10) (app.training.metrics): at the floor the
# latent never fired in training's window, so its density is 0, not 1e-10.
LOG10_DENSITY_FLOOR = -10.0


@torch.no_grad()
def latent_weights_summary(lm: LanguageModel, sae: JumpReLUSAE, latent: int,
                           log10_density: torch.Tensor | None = None, n_logits: int = 10,
                           n_neighbors: int = 10) -> dict[str, Any]:
    """Threshold, density (from sparsity.safetensors if any: `density_source` "training", 0 at the file's floor),
    top/bottom logit effects and the nearest latents by decoder cosine, in the dashboard's key layout (examples and
    histogram empty).

    Logit effects and neighbours are the index's own definitions (`app.lm.logit_lens.logit_effects`,
    `app.sae.geometry.decoder_neighbors`), so a dashboard shows the same numbers with and without an index.
    """
    if not 0 <= latent < sae.d_sae:
        raise UnknownLatent(f"latent {latent} does not exist: this SAE has latents 0..{sae.d_sae - 1}")
    d = decoder_directions(sae, [latent])

    def table(ids: torch.Tensor, values: torch.Tensor) -> list[dict[str, Any]]:
        texts = lm.token_strs([int(i) for i in ids.tolist()])
        return [{"token": t, "value": float(v)} for t, v in zip(texts, values.tolist(), strict=True)]

    top = bottom = []
    if sae.d_in == lm.d_model:  # an SAE of another width has no logit effects through this LM
        eff = logit_effects(lm, d, n_logits)
        top, bottom = table(eff.top_ids[0], eff.top_vals[0]), table(eff.bot_ids[0], eff.bot_vals[0])
    nbr_ids, nbr_cos = decoder_neighbors(decoder_directions(sae), n_neighbors, rows=[latent])
    density = None
    if log10_density is not None and latent < log10_density.numel():
        log10 = float(log10_density[latent])
        density = 0.0 if log10 <= LOG10_DENSITY_FLOOR else 10.0 ** log10
    return {
        "latent": latent,
        "threshold": float(sae.threshold[latent]),
        "density": density,
        "density_source": None if density is None else "training",
        "count": None,
        "tokens_seen": None,
        "max": None,
        "mean": None,
        "histogram": None,
        "top_examples": [],
        "interval_examples": [],
        "top_logits": top,
        "bottom_logits": bottom,
        "neighbors": [{"latent": int(i), "cosine": float(c)}
                      for i, c in zip(nbr_ids[0].tolist(), nbr_cos[0].tolist(), strict=True)],
        "explanation": None,
        "indexed": False,
    }
