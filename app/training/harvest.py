"""One LM pass for several hooks: the harvester behind every LMSource (app/training/activations.py).

A block is the activations of a fixed run of consecutive contexts. `Harvester.block(j)` runs the LM once over
those contexts, capturing every requested hook in the same forward (`capture_many` stops after the deepest),
drops special tokens and outlier-norm positions per hook (app/lm/outliers.py), and keeps the last few blocks
so that the runs of a sweep reading the same block at slightly different steps share one forward.

Harvesting logs its progress (contexts done, tokens/s, seconds spent in the LM) at most every
`PROGRESS_EVERY_S` seconds and once per finished block, so a long first block is never silent.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

import torch

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 10.0  # seconds between two progress lines while a block is harvested


class Harvester:
    """Harvests blocks of activations at one or more hooks of an LM over a fixed list of contexts."""

    def __init__(self, lm: Any, contexts: torch.Tensor, points: list[tuple[str, int]], ctx_per_block: int,
                 lm_batch_size: int = 8, outlier_factor: float = 0.0,
                 norm_refs: dict[str, float | None] | None = None, keep_blocks: int = 2) -> None:
        from app.lm.hooks import hook_name

        self.lm, self.contexts = lm, contexts
        self.points = list(dict.fromkeys(points))
        self.names = [hook_name(kind, layer) for kind, layer in self.points]
        self.ctx_per_block, self.lm_batch_size = ctx_per_block, lm_batch_size
        self.outlier_factor = outlier_factor
        self.norm_refs = norm_refs or {}
        self.keep_blocks = max(1, keep_blocks)
        self.outliers_excluded = dict.fromkeys(self.names, 0)  # non-special positions dropped, per hook
        self.lm_seconds = 0.0  # wall time spent in LM forwards (the cost a sweep shares)
        self.blocks_harvested = 0
        self._blocks: OrderedDict[int, dict[str, torch.Tensor]] = OrderedDict()

    def block(self, j: int) -> dict[str, torch.Tensor]:
        """Activations of block j per hook name: float32 [n_kept, d_in] on the CPU (kept rows in context order)."""
        if j in self._blocks:
            self._blocks.move_to_end(j)
            return self._blocks[j]
        acts = self._harvest(j)
        self._blocks[j] = acts
        while len(self._blocks) > self.keep_blocks:
            self._blocks.popitem(last=False)
        return acts

    def _harvest(self, j: int) -> dict[str, torch.Tensor]:
        from app.lm.hooks import capture_many
        from app.lm.outliers import keep_mask

        ids = self.contexts[j * self.ctx_per_block: (j + 1) * self.ctx_per_block]
        n_ctx = int(ids.shape[0])
        parts: dict[str, list[torch.Tensor]] = {name: [] for name in self.names}
        start = last_log = time.perf_counter()
        for lo in range(0, n_ctx, self.lm_batch_size):
            chunk = ids[lo: lo + self.lm_batch_size]
            captured = capture_many(self.lm, chunk, None, self.points)
            special = self.lm.special_mask(chunk)
            for name in self.names:
                h = captured[name]
                keep = keep_mask(self.lm, chunk, h, self.outlier_factor, self.norm_refs.get(name))
                self.outliers_excluded[name] += int((~special.to(h.device) & ~keep).sum())
                parts[name].append(h[keep].float().cpu())
            now = time.perf_counter()
            done = lo + chunk.shape[0]
            if now - last_log >= PROGRESS_EVERY_S and done < n_ctx:
                last_log = now
                log.info("harvesting block %d: %d/%d contexts, %.0f tokens/s", j, done, n_ctx,
                         done * ids.shape[1] / max(now - start, 1e-9))
        elapsed = time.perf_counter() - start
        self.lm_seconds += elapsed
        self.blocks_harvested += 1
        log.info("harvested block %d: %d contexts × %d tokens at %d hook(s) in %.1f s (%.0f tokens/s)", j, n_ctx,
                 ids.shape[1], len(self.names), elapsed, n_ctx * ids.shape[1] / max(elapsed, 1e-9))
        return {name: torch.cat(p) for name, p in parts.items()}
