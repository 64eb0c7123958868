"""The straight-through estimators of SPEC §1: JumpReLU and the Heaviside step, with pseudo-derivatives for θ
through the rectangle kernel K(u) = 1[-1/2 < u < 1/2] of bandwidth ε. Forward passes use `pre > θ` exactly.
"""

from __future__ import annotations

import torch


def rectangle(u: torch.Tensor) -> torch.Tensor:
    """K(u) = 1[-1/2 < u < 1/2], in u's dtype."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


def _sum_to_threshold(grad: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Reduce a [..., d_sae] gradient over the batch dims to θ's shape [d_sae]."""
    return grad.reshape(-1, grad.shape[-1]).sum(0).to(threshold.dtype)


class JumpReLUFunction(torch.autograd.Function):
    """f = pre·H(pre − θ); ∂f/∂pre = H(pre − θ), ∂f/∂θ = −(θ/ε)·K((pre − θ)/ε)."""

    @staticmethod
    def forward(ctx, pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_pre = grad_out * (pre > threshold)
        grad_theta = -(threshold / eps) * rectangle((pre - threshold) / eps) * grad_out
        return grad_pre, _sum_to_threshold(grad_theta, threshold), None


class StepFunction(torch.autograd.Function):
    """H(pre − θ); ∂H/∂pre = 0, ∂H/∂θ = −(1/ε)·K((pre − θ)/ε). Used for the L0 term, on `pre`."""

    @staticmethod
    def forward(ctx, pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_theta = -(1.0 / eps) * rectangle((pre - threshold) / eps) * grad_out
        return None, _sum_to_threshold(grad_theta, threshold), None


def jumprelu(pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """JumpReLU with the straight-through θ gradient of SPEC §1."""
    return JumpReLUFunction.apply(pre, threshold, bandwidth)


def step(pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """Heaviside step H(pre − θ) with the straight-through θ gradient of SPEC §1."""
    return StepFunction.apply(pre, threshold, bandwidth)
