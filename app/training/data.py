"""Build the activation stream of a run (file or LM harvest) and check it before any work is done."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from app.training.activations import (
    ActivationError,
    FileSource,
    LMSource,
    cache_folder,
    check_finite,
    write_cache_manifest,
)
from app.training.buffer import MixingBuffer
from app.training.config import TrainConfig
from app.training.distributed import DistContext

log = logging.getLogger(__name__)


@dataclass
class DataPlan:
    """What the trainer reads: the buffer, the activation width and the metadata for cfg.json."""

    buffer: MixingBuffer
    d_in: int
    metadata: dict[str, Any] = field(default_factory=dict)
    cache_dir: Path | None = None  # activation cache folder to create (after all checks pass)
    cache_key: dict[str, Any] | None = None  # what the cache folder holds (its manifest)
    split: dict[str, Any] | None = None  # which corpus documents / rows training reads (app.lm.corpus.load_split)

    def commit(self, is_main: bool) -> None:
        """Called once every check has passed: create the activation cache and start writing to it."""
        if self.cache_dir is None:
            return
        if is_main:
            write_cache_manifest(self.cache_dir, self.cache_key or {})
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.buffer.source.enable_cache_writes()


def build_data(config: TrainConfig, dist: DistContext) -> DataPlan:
    """Open and validate the activation source; raises ValueError subclasses for bad input."""
    if config.activations is not None:
        source = FileSource(config.activations, config.buffer_tokens)
        buffer = MixingBuffer(source, config.batch_size, seed=config.seed, rank=dist.rank, world=dist.world)
        meta = {"dataset_path": str(Path(config.activations).resolve()), "model_name": None, "hook_name": None,
                "context_size": None}
        return DataPlan(buffer, source.d_in, meta)
    return _build_lm_data(config, dist)


def _build_lm_data(config: TrainConfig, dist: DistContext) -> DataPlan:
    from app.lm import load_lm
    from app.lm.corpus import iter_texts, load_split
    from app.lm.hooks import capture, hook_name, resolve_hook
    from app.lm.outliers import outlier_record, reference_norm

    if config.batch_size % dist.world:
        raise ValueError(f"--batch-size {config.batch_size} must be divisible by the {dist.world} ranks")
    if not str(config.corpus).startswith("hf:"):
        next(iter(iter_texts(config.corpus)))  # missing/empty corpus fails before loading the model
    lm = load_lm(config.model, device=dist.device, dtype=config.lm_dtype)
    resolve_hook(lm, config.hook, config.layer)  # layer range and hook kind
    max_pos = lm.max_positions
    ctx = config.context_size or min(1024, max_pos or 1024)
    if max_pos is not None and ctx > max_pos:
        raise ValueError(f"--context-size {ctx} exceeds the model's {max_pos} positions")
    # Enough contexts for the run, with slack for the special tokens that are dropped.
    n_tokens = math.ceil(config.tokens * 1.1) + ctx * dist.world
    # Only the training part of the document split: every `holdout_every`-th document is left for eval.
    contexts, split = load_split(lm, config.corpus, ctx, n_tokens=n_tokens, seed=config.seed, part="train",
                                 holdout_every=config.holdout_every)
    shard = contexts[dist.rank:: dist.world]
    if shard.shape[0] == 0:
        raise ValueError(f"corpus gives {contexts.shape[0]} contexts, fewer than the {dist.world} ranks")
    block_tokens = max(ctx, config.buffer_tokens // dist.world)
    cache_dir, key = None, None
    if config.activation_cache is not None:
        key = {
            "model": str(config.model), "hook": config.hook, "layer": config.layer, "corpus": str(config.corpus),
            "context_size": ctx, "n_tokens": n_tokens, "seed": config.seed, "block_tokens": block_tokens,
            "world": dist.world, "lm_dtype": str(lm.dtype), "holdout_every": config.holdout_every,
            "outlier_factor": config.outlier_factor,
        }
        cache_dir = cache_folder(config.activation_cache, key)
    # The outlier yardstick: the median norm of the first LM batch of the (shuffled) training contexts, the same
    # on every rank and on resume.
    norm_ref = None
    if config.outlier_factor > 0:
        first_ids = contexts[: config.lm_batch_size]
        norm_ref = reference_norm(lm, first_ids, capture(lm, first_ids, None, config.hook, config.layer))
    source = LMSource(lm, shard, config.hook, config.layer, block_tokens, config.lm_batch_size,
                      cache_dir=cache_dir, rank=dist.rank, outlier_factor=config.outlier_factor, norm_ref=norm_ref)
    first = source.rows(0, torch.arange(source.block_size(0)))  # harvest block 0: NaN/Inf fail before work
    check_finite(first, f"{config.model} at {config.hook} layer {config.layer}")
    if config.d_in is not None and config.d_in != source.d_in:
        raise ActivationError(f"--d-in {config.d_in} does not match the model's width {source.d_in}")
    local = config.batch_size // dist.world
    buffer = MixingBuffer(source, local, seed=config.seed * 7919 + dist.rank)
    meta = {
        "model_name": str(config.model), "hook_name": hook_name(config.hook, config.layer),
        "hook_layer": config.layer, "context_size": ctx, "dataset_path": str(config.corpus), "prepend_bos": True,
        "outliers": outlier_record(config.outlier_factor, norm_ref),
    }
    return DataPlan(buffer, source.d_in, meta, cache_dir, cache_key=key if cache_dir else None, split=split)
