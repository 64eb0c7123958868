"""Non-overlapping example windows: greedy selection within each (latent, corpus row), vectorised.

The rule (also what the brute-force reference in the tests computes): rank a latent's activations by
(value desc, position asc) and take them greedily, skipping one whose window overlaps an already-taken
window. Windows of different rows never overlap, so the greedy choice decomposes per row, and as a row is
always processed inside one batch, each batch can run it alone and hand the survivors to the top-k merge.
"""

from __future__ import annotations

import torch

from app.index.state import desc_key, group_rank


def greedy_windows(group: torch.Tensor, pos: torch.Tensor, val: torch.Tensor, separation: int,
                   limit: int) -> torch.Tensor:
    """Indices of the entries kept by greedy non-overlap selection within each group (≤ `limit` per group).

    `group` identifies a (latent, row) pair; two entries of a group overlap when |Δpos| <= separation.
    Each round takes the best remaining entry of every group and drops the entries that overlap it, so the
    number of rounds is at most `limit` and the work shrinks as entries are taken or dropped.
    """
    order, _, _ = group_rank(group, desc_key(val), pos)  # best first within each group
    idx, g, p = order, group[order], pos[order]
    taken: list[torch.Tensor] = []
    for _ in range(limit):
        if idx.numel() == 0:
            break
        first = torch.ones_like(g, dtype=torch.bool)
        first[1:] = g[1:] != g[:-1]
        taken.append(idx[first])
        seg = torch.cumsum(first.long(), 0) - 1
        chosen = p[first][seg]
        keep = ~first & ((p - chosen).abs() > separation)
        idx, g, p = idx[keep], g[keep], p[keep]
    if not taken:
        return torch.empty(0, dtype=torch.long, device=group.device)
    return torch.cat(taken)
