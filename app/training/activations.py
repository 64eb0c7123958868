"""Activation sources for training: an activation file (SPEC §6), or an LM harvested on the fly.

Both serve fixed *blocks* to the mixing buffer (app.training.buffer). An LM block is the activations of a
fixed run of consecutive contexts of this rank's corpus shard, with special tokens (BOS/EOS/PAD) and outlier-norm
positions dropped (the shared rule of app/lm/outliers.py);
harvested blocks can be kept as safetensors shards in an activation cache and reused by every run of a sweep
that reads the same model, hook, corpus and token budget.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from app.fsio import atomic_write_json, fsync_file

log = logging.getLogger(__name__)

ACTIVATIONS_KEY = "activations"
_SCAN_ROWS = 65_536  # rows per chunk when scanning a file for NaN/Inf


class ActivationError(ValueError):
    """Activations that cannot be trained on (missing, wrong shape, non-finite); the message says why."""


def check_finite(x: torch.Tensor, where: str) -> None:
    """Raise ActivationError when `x` holds NaN or Inf."""
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise ActivationError(f"{where}: {bad} activation values are NaN or Inf")


def inspect_activation_file(path: str | os.PathLike) -> tuple[int, int]:
    """(N, d_in) of an activation file, after checking key, shape, dtype and that every value is finite."""
    p = Path(path)
    if not p.is_file():
        raise ActivationError(f"{p}: activation file not found")
    try:
        with safe_open(str(p), framework="pt") as fh:
            if ACTIVATIONS_KEY not in fh.keys():
                raise ActivationError(f"{p}: no {ACTIVATIONS_KEY!r} tensor (keys: {sorted(fh.keys())})")
            sl = fh.get_slice(ACTIVATIONS_KEY)
            shape = tuple(sl.get_shape())
            if len(shape) != 2 or shape[0] < 1 or shape[1] < 1:
                raise ActivationError(f"{p}: {ACTIVATIONS_KEY!r} must be [N, d_in] with N, d_in >= 1, got {shape}")
            for lo in range(0, shape[0], _SCAN_ROWS):
                chunk = sl[lo: lo + _SCAN_ROWS]
                if not chunk.is_floating_point():
                    raise ActivationError(f"{p}: activations must be floating point, got {chunk.dtype}")
                check_finite(chunk, str(p))
    except (SafetensorError, OSError) as e:
        raise ActivationError(f"{p}: unreadable safetensors file ({e})") from None
    return int(shape[0]), int(shape[1])


def save_activation_file(path: str | os.PathLike, activations: torch.Tensor) -> Path:
    """Write `activations` [N, d_in] as an activation file (atomically)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    try:
        save_file({ACTIVATIONS_KEY: activations.detach().contiguous().cpu()}, str(tmp))
        fsync_file(tmp)
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p


class FileSource:
    """Blocks are consecutive row ranges of an activation file; block k wraps around (epochs)."""

    def __init__(self, path: str | os.PathLike, block_tokens: int) -> None:
        self.path = Path(path)
        self.n_rows, self.d_in = inspect_activation_file(self.path)
        self.block_tokens = min(block_tokens, self.n_rows)
        self.n_blocks = math.ceil(self.n_rows / self.block_tokens)
        self._cached: tuple[int, torch.Tensor] | None = None

    def _range(self, k: int) -> tuple[int, int]:
        j = k % self.n_blocks
        return j * self.block_tokens, min(self.n_rows, (j + 1) * self.block_tokens)

    def block_size(self, k: int) -> int:
        lo, hi = self._range(k)
        return hi - lo

    def _block(self, k: int) -> torch.Tensor:
        j = k % self.n_blocks
        if self._cached is None or self._cached[0] != j:
            lo, hi = self._range(k)
            with safe_open(str(self.path), framework="pt") as fh:
                self._cached = (j, fh.get_slice(ACTIVATIONS_KEY)[lo:hi].float())
        return self._cached[1]

    def rows(self, k: int, index: torch.Tensor) -> torch.Tensor:
        return self._block(k)[index]


class LMSource:
    """Harvests blocks of activations from an LM at a hook, over this rank's shard of packed contexts."""

    def __init__(
        self,
        lm: Any,
        contexts: torch.Tensor,
        kind: str,
        layer: int,
        block_tokens: int,
        lm_batch_size: int = 8,
        cache_dir: Path | None = None,
        rank: int = 0,
        outlier_factor: float = 0.0,
        norm_ref: float | None = None,
        harvester: Any = None,
    ) -> None:
        from app.lm.hooks import hook_name
        from app.training.harvest import Harvester

        if contexts.ndim != 2 or contexts.shape[0] == 0:
            raise ActivationError("no token contexts to harvest from (corpus too small for one context?)")
        self.lm, self.contexts, self.kind, self.layer = lm, contexts, kind, layer
        self.name = hook_name(kind, layer)
        self.d_in = int(lm.d_model)
        self.lm_batch_size, self.outlier_factor, self.norm_ref = lm_batch_size, outlier_factor, norm_ref
        self.ctx_per_block = max(1, math.ceil(block_tokens / contexts.shape[1]))
        self.n_blocks = math.ceil(contexts.shape[0] / self.ctx_per_block)
        # One harvester may serve several sources (the hooks of a sweep: one LM forward for all of them).
        self.harvester = harvester or Harvester(lm, contexts, [(kind, layer)], self.ctx_per_block, lm_batch_size,
                                                outlier_factor, {self.name: norm_ref}, keep_blocks=1)
        if self.harvester.ctx_per_block != self.ctx_per_block or self.name not in self.harvester.names:
            raise ValueError(f"the shared harvester does not serve {self.name} in blocks of {self.ctx_per_block}")
        self.cache_dir, self.rank = cache_dir, rank
        self.write_cache = False  # turned on once the run has passed its checks (nothing written before)
        self._cached: tuple[int, torch.Tensor] | None = None

    @property
    def outliers_excluded(self) -> int:
        """Non-special positions dropped as outliers at this hook (blocks harvested by this process)."""
        return self.harvester.outliers_excluded[self.name]

    def _harvest(self, j: int) -> torch.Tensor:
        acts = self.harvester.block(j)[self.name]
        check_finite(acts, f"activations of block {j} at {self.kind} layer {self.layer}")
        return acts

    def _shard_path(self, j: int) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"rank{self.rank}-block{j:06d}.safetensors"

    def _block(self, k: int) -> torch.Tensor:
        j = k % self.n_blocks
        if self._cached is not None and self._cached[0] == j:
            return self._cached[1]
        path = self._shard_path(j)
        if path is not None and path.exists():
            acts = load_file(str(path))[ACTIVATIONS_KEY].float()
        else:
            acts = self._harvest(j)
            if path is not None and self.write_cache:
                save_activation_file(path, acts)
        if acts.shape[0] == 0:
            raise ActivationError(f"block {j} holds only special tokens")
        self._cached = (j, acts)
        return acts

    def enable_cache_writes(self) -> None:
        """Start writing harvested blocks to the cache, beginning with the block already in memory."""
        self.write_cache = self.cache_dir is not None
        if self.write_cache and self._cached is not None:
            path = self._shard_path(self._cached[0])
            if path is not None and not path.exists():
                save_activation_file(path, self._cached[1])

    def block_size(self, k: int) -> int:
        return int(self._block(k).shape[0])

    def rows(self, k: int, index: torch.Tensor) -> torch.Tensor:
        return self._block(k)[index]


def cache_folder(root: str | os.PathLike, key: dict[str, Any]) -> Path:
    """The sub-folder of an activation cache for one harvest recipe (a hash of `key`), with a manifest."""
    blob = json.dumps(key, sort_keys=True)
    folder = Path(root) / hashlib.sha256(blob.encode()).hexdigest()[:16]
    return folder


def write_cache_manifest(folder: Path, key: dict[str, Any]) -> None:
    """Record what a cache folder holds (human-readable; the folder name is its hash)."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "manifest.json"
    if not manifest.exists():
        atomic_write_json(manifest, key)
