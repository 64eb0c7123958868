"""LM forwards that start at the hook: the layers before it are skipped and the cached (spliced) activation
enters where the hook reads, so a what-if pays only for the layers after the hook.

For `resid_post` of layer L the blocks 0..L are replaced, for the call, by stubs: blocks before L pass their
input through and block L returns the given activation; for `resid_pre` of layer L ≥ 1 the same with blocks
0..L−1. The embedding (and position set-up) still runs; it is cheap. Other hook kinds (and resid_pre of layer
0) fall back to a whole forward with the activation spliced in at the hook. `SampleCache` checks once that
both paths give the same loss before it uses this one (app/workbench/cache.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from app.lm.hooks import intervene
from app.lm.model import LanguageModel


def skips_prefix(kind: str, layer: int) -> bool:
    """Whether a forward from this hook can skip the blocks before it."""
    return kind == "resid_post" or (kind == "resid_pre" and layer >= 1)


@contextmanager
def _stubbed(lm: LanguageModel, last: int, full: torch.Tensor, as_tuple: bool) -> Iterator[None]:
    blocks = [lm.layers[j] for j in range(last + 1)]

    def wrap(h: torch.Tensor):
        return (h,) if as_tuple else h

    def passthrough(*args, **kwargs):
        return wrap(args[0] if args else kwargs["hidden_states"])

    def inject(*args, **kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        return wrap(full.to(h.dtype))

    for j, block in enumerate(blocks):
        block.forward = inject if j == last else passthrough
    try:
        yield
    finally:
        for block in blocks:
            del block.forward


def block_returns_tuple(lm: LanguageModel, ids: torch.Tensor) -> bool:
    """Whether the model's blocks return a tuple (transformers 4.x for some families) or a tensor."""
    seen: dict[str, bool] = {}

    def hook(module, args, output):
        seen["tuple"] = isinstance(output, tuple)

    handle = lm.layers[0].register_forward_hook(hook)
    try:
        lm.model(input_ids=ids[:1, :2], use_cache=False)
    finally:
        handle.remove()
    return seen.get("tuple", False)


@torch.no_grad()
def logits_from_hook(lm: LanguageModel, kind: str, layer: int, ids: torch.Tensor, full: torch.Tensor,
                     special: torch.Tensor, skip: bool, as_tuple: bool = False) -> torch.Tensor:
    """Logits of `ids` with the hook's activation replaced by `full` [B, T, d] (special positions: `full`
    must already hold the clean activation there). `skip` runs only the blocks after the hook."""
    if skip and skips_prefix(kind, layer):
        last = layer if kind == "resid_post" else layer - 1
        with _stubbed(lm, last, full, as_tuple):
            return lm.model(input_ids=ids, use_cache=False).logits

    def splice(h: torch.Tensor, offset: int) -> torch.Tensor:
        return torch.where(special.unsqueeze(-1), h, full.to(h.dtype))

    with intervene(lm, kind, layer, splice):
        return lm.model(input_ids=ids, use_cache=False).logits
