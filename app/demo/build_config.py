"""The demo build's sizes (`BuildConfig`), saved as build.json in the bundle and read back by the report.

Its own module so the builder (`app.demo.build`) and the report (`app.demo.report`) both import it without
importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BuildConfig:
    """Every size of the demo build; saved as build.json in the bundle."""

    seed: int = 0  # world, LM and SAE seed
    train_docs: int = 42000  # documents the LM and SAE train on (~2.2M tokens; the SAE reads each once)
    val_docs: int = 400  # held-out documents: LM validation loss, SAE eval, index corpus
    eval_docs: int = 600  # held-out documents with labels: concept F1 in the report
    vocab_size: int = 1024  # BPE vocabulary cap (the world needs ~850)
    d_model: int = 64  # LM width
    n_layers: int = 2  # LM blocks; the SAE reads the residual stream between the halves
    # LM optimiser steps (seeds 0/1: 400 gave F1 0.88/0.97, steering 8/14; 800 gave 0.93/0.97, 21/27)
    lm_steps: int = 800
    lm_batch_size: int = 32  # LM rows per step
    lm_lr: float = 5e-3  # LM peak learning rate
    context_size: int = 64  # tokens per row for LM, SAE, eval and index
    d_sae: int = 1024  # SAE latents (256 merged concepts with unrelated tokens: F1 0.59 vs 0.76)
    target_l0: float = 12.0  # SAE target L0 (the trainer's controller adapts λ)
    sae_tokens: int = 2_000_000  # SAE training tokens (1M: mean lexical F1 0.90-0.92, 2M: 0.93)
    sae_batch_size: int = 1024  # SAE tokens per step (~1000 steps over the corpus)
    sae_lr: float | None = 4e-3  # SAE peak learning rate (None: the trainer's auto rule)
    sae_threshold_init: float = 0.1  # θ at init in normalised units (short run: start near the pre-act scale)
    eval_tokens: int = 16_384  # tokens for the SAE eval (L0, FVU, ΔLM loss)
    index_tokens: int = 16_384  # tokens indexed for dashboards
    steer_prompts: int = 32  # prompts in the steering check (8 gave a default colour share of 0.007-0.093)
    steer_tokens: int = 64  # tokens generated per prompt
    threads: int | None = None  # torch CPU threads; None: all cores when idle, 1 when they are busy

    def __post_init__(self) -> None:
        positive = ("train_docs", "val_docs", "eval_docs", "vocab_size", "d_model", "n_layers", "lm_steps",
                    "lm_batch_size", "context_size", "d_sae", "sae_tokens", "sae_batch_size", "eval_tokens",
                    "index_tokens", "steer_prompts", "steer_tokens")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"demo build setting {name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.target_l0 < self.d_sae:
            raise ValueError(f"target_l0 must be in (0, d_sae={self.d_sae}), got {self.target_l0}")
        if self.sae_tokens < self.sae_batch_size:
            raise ValueError("sae_tokens must be at least one SAE batch")

    @property
    def layer(self) -> int:
        """The block whose resid_post is the middle of the residual stream (block 0 of 2, 1 of 3 or 4)."""
        return (self.n_layers - 1) // 2

    @classmethod
    def small(cls) -> BuildConfig:
        """A scaled-down build (seconds) for tests: same pipeline, tiny sizes."""
        return cls(train_docs=300, val_docs=40, eval_docs=40, vocab_size=600, d_model=32, n_layers=2,
                   lm_steps=20, lm_batch_size=8, context_size=32, d_sae=64, target_l0=8.0, sae_tokens=16_384,
                   sae_batch_size=1024, eval_tokens=1024, index_tokens=1024, steer_prompts=2, steer_tokens=16,
                   threads=1)


