"""Geometry of the decoder: each latent's direction and its nearest latents by decoder cosine.

The one definition of "neighbours" JumpScope shows (index and weight-only dashboards alike).
Never imports transformers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from app.sae.jumprelu import JumpReLUSAE


@torch.no_grad()
def decoder_directions(sae: JumpReLUSAE, rows: Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
    """W_dec rows in raw activation units (decode divides by `input_scale`, 1 once folded), [rows, d_in]."""
    w = sae.W_dec.detach()
    if rows is not None:
        w = w[torch.as_tensor(rows, dtype=torch.long, device=w.device)]
    return w / sae.input_scale


@torch.no_grad()
def decoder_neighbors(w_dec: torch.Tensor, n: int, rows: Sequence[int] | torch.Tensor | None = None,
                      chunk_elems: int = 1 << 26) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, cosines), each [len(rows), n] on the CPU: the `n` nearest other latents of each latent in `rows`
    (all latents when None) by cosine of decoder directions, best first.

    Each step holds a [chunk, d_sae] block with chunk·d_sae <= chunk_elems (never d_sae × d_sae).
    """
    d_sae = w_dec.shape[0]
    query = (torch.arange(d_sae) if rows is None else torch.as_tensor(rows, dtype=torch.long).reshape(-1)).cpu()
    if query.numel() and not (0 <= int(query.min()) and int(query.max()) < d_sae):
        raise IndexError(f"latent rows must lie in 0..{d_sae - 1}")
    n = max(0, min(n, d_sae - 1))
    if n == 0 or query.numel() == 0:
        empty = torch.empty(query.numel(), n)
        return empty.long(), empty
    unit = w_dec.float()
    unit = unit / unit.norm(dim=1, keepdim=True).clamp_min(1e-12)
    step = max(1, chunk_elems // d_sae)
    ids, cos = [], []
    for lo in range(0, query.numel(), step):
        q = query[lo:lo + step]
        sim = unit[q.to(unit.device)] @ unit.T
        sim[torch.arange(q.numel(), device=sim.device), q.to(sim.device)] = float("-inf")  # not its own neighbour
        top = sim.topk(n, dim=1)
        ids.append(top.indices.cpu())
        cos.append(top.values.cpu())
    return torch.cat(ids), torch.cat(cos)
