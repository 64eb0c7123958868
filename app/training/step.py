"""One training step in the fixed order of SPEC §2; the trainer and benchmarks/train_throughput.py both run it.

    forward (the loss lives in the SAE's forward) → backward → [all-reduce gradients across ranks]
    → [unit decoder: remove each decoder row's radial gradient] → clip the gradient norm → Adam
    → [unit decoder: renormalise decoder rows] → [linear θ: project θ to ≥ 0]

With a free decoder (the trainer's default, docs/training.md) the rows keep whatever norm they learn; the SAE is
saved with `fold_decoder_norm()`, so a saved SAE still has unit rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from app.sae import JumpReLUSAE, SAEOutput


@torch.no_grad()
def project_decoder_grad_(sae: JumpReLUSAE) -> None:
    """Remove the gradient component parallel to each (unit-norm) W_dec row, in one pass over W_dec."""
    w, g = sae.W_dec, sae.W_dec.grad
    if g is not None:
        g.addcmul_(w, torch.linalg.vecdot(g, w).unsqueeze(1), value=-1.0)


@torch.no_grad()
def renormalise_decoder_(sae: JumpReLUSAE) -> None:
    """Rescale every W_dec row to unit norm."""
    sae.W_dec.div_(torch.linalg.vector_norm(sae.W_dec, dim=1, keepdim=True).clamp_min(1e-12))


def training_step(
    sae: JumpReLUSAE,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    l0_coefficient: float,
    grad_clip: float = 1.0,
    average_gradients: Callable[[], None] | None = None,
    autocast: contextlib.AbstractContextManager | None = None,
    sparse: bool | None = None,
    loss_fn: Callable[[JumpReLUSAE, torch.Tensor, float], SAEOutput] | None = None,
    unit_decoder: bool = True,
) -> SAEOutput:
    """One optimiser step on batch `x` with sparsity coefficient λ = `l0_coefficient`; returns the forward output.

    `loss_fn(sae, x, λ)` replaces the SAE's own loss (mse + λ·L0) by another objective (app/training/objectives.py).
    θ trains as log θ or as θ itself (`sae.use_linear_threshold()`): an SAE whose θ is stored exactly (a loaded
    one) must call `make_threshold_trainable()` first. `unit_decoder=False` trains the decoder rows freely.
    """
    if not sae.threshold_trainable:
        raise ValueError("this SAE's thresholds are stored, not trainable: call sae.make_threshold_trainable() first")
    with autocast or contextlib.nullcontext():
        out = sae(x, l0_coefficient, sparse=sparse) if loss_fn is None else loss_fn(sae, x, l0_coefficient)
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    if average_gradients is not None:
        average_gradients()
    if unit_decoder:
        project_decoder_grad_(sae)
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_([p for p in sae.parameters() if p.grad is not None], grad_clip)
    opt.step()
    if unit_decoder:
        renormalise_decoder_(sae)
    sae.clamp_threshold_()
    return out
