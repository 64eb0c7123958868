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
    harvester: Any = None  # the LM harvester (app.training.harvest), shared by the plans of a sweep

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
    return build_lm_data([config], dist)[0]


def build_lm_data(configs: list[TrainConfig], dist: DistContext) -> list[DataPlan]:
    """One DataPlan per config, all fed by one LM and one forward per block for every hook (a sweep).

    The configs must agree on everything that decides the activation stream (`SHARED_DATA_KEYS`, checked by
    app.training.sweep); each plan then equals what `build_data` gives its config alone.
    """
    from app.lm import load_lm
    from app.lm.corpus import iter_texts, load_split
    from app.lm.hooks import capture_many, hook_name, resolve_hook
    from app.lm.outliers import outlier_record, reference_norm
    from app.training.harvest import Harvester

    config = configs[0]
    if config.batch_size % dist.world:
        raise ValueError(f"--batch-size {config.batch_size} must be divisible by the {dist.world} ranks")
    if not str(config.corpus).startswith("hf:"):
        next(iter(iter_texts(config.corpus)))  # missing/empty corpus fails before loading the model
    log.info("loading %s", config.model)
    lm = load_lm(config.model, device=dist.device, dtype=config.lm_dtype)
    points = list(dict.fromkeys((c.hook, int(c.layer)) for c in configs))
    for kind, layer in points:
        resolve_hook(lm, kind, layer)  # layer range and hook kind
    max_pos = lm.max_positions
    ctx = config.context_size or min(1024, max_pos or 1024)
    if max_pos is not None and ctx > max_pos:
        raise ValueError(f"--context-size {ctx} exceeds the model's {max_pos} positions")
    # Enough contexts for the run, with slack for the special tokens that are dropped.
    n_tokens = math.ceil(config.tokens * 1.1) + ctx * dist.world
    # Only the training part of the document split: every `holdout_every`-th document is left for eval.
    log.info("reading %s: %d tokens in contexts of %d", config.corpus, n_tokens, ctx)
    contexts, split = load_split(lm, config.corpus, ctx, n_tokens=n_tokens, seed=config.seed, part="train",
                                 holdout_every=config.holdout_every)
    shard = contexts[dist.rank:: dist.world]
    if shard.shape[0] == 0:
        raise ValueError(f"corpus gives {contexts.shape[0]} contexts, fewer than the {dist.world} ranks")
    block_tokens = max(ctx, config.buffer_tokens // dist.world)
    # The outlier yardstick: the median norm of the first LM batch of the (shuffled) training contexts, the same
    # on every rank and on resume.
    names = [hook_name(kind, layer) for kind, layer in points]
    norm_refs: dict[str, float | None] = dict.fromkeys(names)
    if config.outlier_factor > 0:
        first_ids = contexts[: config.lm_batch_size]
        first = capture_many(lm, first_ids, None, points)
        norm_refs = {name: reference_norm(lm, first_ids, first[name]) for name in names}
    ctx_per_block = max(1, math.ceil(block_tokens / ctx))
    harvester = Harvester(lm, shard, points, ctx_per_block, config.lm_batch_size, config.outlier_factor, norm_refs,
                          keep_blocks=1 if len(configs) == 1 else 2)
    sources: dict[str, tuple[LMSource, dict[str, Any] | None]] = {}
    for kind, layer in points:
        name = hook_name(kind, layer)
        key = None
        if config.activation_cache is not None:
            key = {
                "model": str(config.model), "hook": kind, "layer": layer, "corpus": str(config.corpus),
                "context_size": ctx, "n_tokens": n_tokens, "seed": config.seed, "block_tokens": block_tokens,
                "world": dist.world, "lm_dtype": str(lm.dtype), "holdout_every": config.holdout_every,
                "outlier_factor": config.outlier_factor,
            }
        cache_dir = cache_folder(config.activation_cache, key) if key is not None else None
        source = LMSource(lm, shard, kind, layer, block_tokens, config.lm_batch_size, cache_dir=cache_dir,
                          rank=dist.rank, outlier_factor=config.outlier_factor, norm_ref=norm_refs[name],
                          harvester=harvester)
        sources[name] = (source, key)
    for kind, layer in points:  # harvest block 0 (one forward for every hook): NaN/Inf fail before work
        source = sources[hook_name(kind, layer)][0]
        first_rows = source.rows(0, torch.arange(source.block_size(0)))
        check_finite(first_rows, f"{config.model} at {kind} layer {layer}")
    plans = []
    for c in configs:
        name = hook_name(c.hook, int(c.layer))
        source, key = sources[name]
        if c.d_in is not None and c.d_in != source.d_in:
            raise ActivationError(f"--d-in {c.d_in} does not match the model's width {source.d_in}")
        buffer = MixingBuffer(source, c.batch_size // dist.world, seed=c.seed * 7919 + dist.rank)
        meta = {
            "model_name": str(c.model), "hook_name": name, "hook_layer": c.layer, "context_size": ctx,
            "dataset_path": str(c.corpus), "prepend_bos": True,
            "outliers": outlier_record(c.outlier_factor, norm_refs[name]),
        }
        plans.append(DataPlan(buffer, source.d_in, meta, source.cache_dir, cache_key=key, split=split,
                              harvester=harvester))
    return plans
