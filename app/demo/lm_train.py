"""Train the demo's tiny Llama-architecture LM with a plain next-token loop, and measure it.

The model is built from a config (no download), trained on packed contexts from `app.lm.corpus`, saved with
`save_pretrained` beside its tokenizer, and loaded back by `app.lm.load_lm` like any real checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.nn import functional as F
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

from app.lm.corpus import iter_contexts

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]  # (stage message, fraction done in [0, 1])


@dataclass
class LMTrainConfig:
    """Size and schedule of the demo LM; saved as `lm_train_config.json` beside the model."""

    d_model: int = 128  # residual stream width
    n_layers: int = 4  # transformer blocks
    n_heads: int = 4  # attention heads (key/value heads: half of these)
    d_mlp: int = 256  # MLP hidden width
    context_size: int = 128  # tokens per training row (BOS first)
    batch_size: int = 32  # rows per step
    steps: int = 600  # optimiser steps
    lr: float = 3e-3  # peak AdamW learning rate
    warmup_steps: int = 50  # linear warm-up, then cosine decay to 10 % of the peak
    weight_decay: float = 0.05  # AdamW decoupled weight decay (pulls interchangeable words together)
    tie_embeddings: bool = True  # unembedding = embedding (also what makes latent steering show directly)
    seed: int = 0  # initialisation and batch order

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layers", "n_heads", "d_mlp", "context_size", "batch_size", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} must be a multiple of n_heads {self.n_heads}")
        if not self.lr > 0 or self.warmup_steps < 0 or self.weight_decay < 0:
            raise ValueError("lr must be > 0, warmup_steps and weight_decay >= 0")


def build_model(cfg: LMTrainConfig, tokenizer: PreTrainedTokenizerFast) -> torch.nn.Module:
    """A randomly initialised Llama causal LM wired to the tokenizer's special ids."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_mlp,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=max(1, cfg.n_heads // 2),
        max_position_embeddings=max(256, cfg.context_size),
        tie_word_embeddings=cfg.tie_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(cfg.seed)
    return AutoModelForCausalLM.from_config(config)


def pack(tokenizer: PreTrainedTokenizerFast, texts: Sequence[str], context_size: int) -> torch.Tensor:
    """LongTensor [N, context_size]: documents packed by the corpus reader (BOS first, EOS between)."""
    rows = list(iter_contexts(tokenizer, texts, context_size))
    if not rows:
        raise ValueError(f"texts hold fewer tokens than one context of {context_size}")
    return torch.tensor(rows, dtype=torch.long)


def _lr_at(step: int, cfg: LMTrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _next_token_loss(model: torch.nn.Module, ids: torch.Tensor, special_ids: torch.Tensor) -> torch.Tensor:
    """Mean CE of predicting each next token; BOS/PAD targets are skipped (EOS is a real prediction)."""
    logits = model(input_ids=ids).logits[:, :-1]
    targets = ids[:, 1:].clone()
    targets[torch.isin(targets, special_ids)] = -100
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


def train_lm(cfg: LMTrainConfig, tokenizer: PreTrainedTokenizerFast, rows: torch.Tensor,
             progress: Progress | None = None) -> torch.nn.Module:
    """Train a fresh model on packed `rows` [N, T] for `cfg.steps` steps of `cfg.batch_size` rows."""
    model = build_model(cfg, tokenizer)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    not_targets = torch.tensor([i for i in (tokenizer.bos_token_id, tokenizer.pad_token_id) if i is not None])
    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(rows), generator=gen)
    cursor, started = 0, time.perf_counter()
    for step in range(cfg.steps):
        if cursor + cfg.batch_size > len(order):
            order, cursor = torch.randperm(len(rows), generator=gen), 0
        batch = rows[order[cursor:cursor + cfg.batch_size]]
        cursor += cfg.batch_size
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        loss = _next_token_loss(model, batch, not_targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == cfg.steps - 1:
            log.info("lm step %d/%d loss %.3f (%.0f s)", step + 1, cfg.steps, loss.item(),
                     time.perf_counter() - started)
            if progress:
                progress(f"LM step {step + 1}/{cfg.steps}, loss {loss.item():.3f}", (step + 1) / cfg.steps)
    model.eval()
    return model


def save_lm(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, folder: str | os.PathLike,
            cfg: LMTrainConfig) -> Path:
    """`save_pretrained` the model and tokenizer, plus the training config as JSON."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "lm_train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    return folder


@torch.no_grad()
def validation_loss(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, rows: torch.Tensor,
                    batch_size: int = 32) -> float:
    """Mean next-token CE (nats) over `rows`, BOS/PAD targets skipped."""
    not_targets = torch.tensor([i for i in (tokenizer.bos_token_id, tokenizer.pad_token_id) if i is not None])
    total, count = 0.0, 0
    for i in range(0, len(rows), batch_size):
        batch = rows[i:i + batch_size].to(next(model.parameters()).device)
        n = int((~torch.isin(batch[:, 1:], not_targets.to(batch.device))).sum())
        total += _next_token_loss(model, batch, not_targets.to(batch.device)).item() * n
        count += n
    return total / max(1, count)


def unigram_loss(tokenizer: PreTrainedTokenizerFast, train_rows: torch.Tensor, val_rows: torch.Tensor) -> float:
    """CE (nats) of the best context-free model: train-set token frequencies (add-one), scored on val targets."""
    skip = [i for i in (tokenizer.bos_token_id, tokenizer.pad_token_id) if i is not None]
    vocab = len(tokenizer)
    train = train_rows[:, 1:].reshape(-1)
    counts = torch.bincount(train[~torch.isin(train, torch.tensor(skip))], minlength=vocab).double() + 1.0
    logp = (counts / counts.sum()).log()
    val = val_rows[:, 1:].reshape(-1)
    val = val[~torch.isin(val, torch.tensor(skip))]
    return float(-logp[val].mean())
