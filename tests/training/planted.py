"""Synthetic activations from a known sparse dictionary in superposition (shared by the training tests)."""

from __future__ import annotations

import torch


def planted_activations(n: int, d_in: int = 64, n_true: int = 200, l0: float = 3.0, seed: int = 0):
    """(activations [n, d_in], true unit directions [n_true, d_in], planted mean L0).

    Each direction fires independently with probability l0 / n_true, with a magnitude in [1, 2).
    """
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(n_true, d_in, generator=g)
    dirs /= dirs.norm(dim=1, keepdim=True)
    active = torch.rand(n, n_true, generator=g) < l0 / n_true
    mags = 1.0 + torch.rand(n, n_true, generator=g)
    return (active * mags) @ dirs, dirs, float(active.sum(1).double().mean())
