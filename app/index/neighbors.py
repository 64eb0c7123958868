"""Nearest latents by cosine similarity of decoder directions, chunked (never a d_sae × d_sae matrix)."""

from __future__ import annotations

import torch


@torch.no_grad()
def decoder_neighbors(w_dec: torch.Tensor, n: int, chunk_elems: int = 1 << 26) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, cosines) [d_sae, n] of each latent's `n` nearest other latents, best first.

    Each step holds a [rows, d_sae] block with rows·d_sae <= chunk_elems.
    """
    d_sae = w_dec.shape[0]
    n = min(n, d_sae - 1)
    if n <= 0:
        empty = torch.empty(d_sae, 0)
        return empty.long(), empty
    unit = w_dec.float()
    unit = unit / unit.norm(dim=1, keepdim=True).clamp_min(1e-12)
    rows = max(1, chunk_elems // d_sae)
    ids, cos = [], []
    for lo in range(0, d_sae, rows):
        sim = unit[lo:lo + rows] @ unit.T
        r = torch.arange(sim.shape[0], device=sim.device)
        sim[r, r + lo] = float("-inf")  # not its own neighbour
        top = sim.topk(n, dim=1)
        ids.append(top.indices.cpu())
        cos.append(top.values.cpu())
    return torch.cat(ids), torch.cat(cos)
