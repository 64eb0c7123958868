"""The trainer's optimiser: Adam, with θ's second moment optionally shared over latents (--threshold-step).

torch's Adam divides every element's step by the root of its own second moment, so each element moves by about
lr per step whatever the size of its gradient. For θ that is a sign-following random walk: θ_i only gets gradient
from the pre-activations inside the straight-through window (app/sae/ste.py), a handful per batch for a rarely
firing latent, and each of those events moves θ_i by ~lr whether it carried much evidence or little. With one
second moment shared by all latents (the mean of the squared gradient over latents), a latent's step follows the
size of its own gradient relative to the typical one:

    m_i ← β1·m_i + (1 − β1)·g_i,   v ← β2·v + (1 − β2)·mean_i g_i²,
    θ_i ← θ_i − lr · clip(m̂_i / (√v̂ + ε), −c, c)

with m̂, v̂ bias-corrected as in Adam and c = THRESHOLD_STEP_CLIP (one latent can carry most of the batch's
gradient; the clip keeps its step within c·lr). Measured (docs/training.md, ninth pass): the same or better
recovery at the same LR, and half the dead latents at a larger one (SmolLM2-135M 0.5M tokens, θ's LR ×4: 7.0 %
dead against 11.2 %), which is what lets θ's LR grow with d_in (`group_lrs`, app/training/schedule.py).
"""

from __future__ import annotations

import torch

THRESHOLD_STEP_CLIP = 3.0  # c: the largest step of one θ_i in units of the group's lr (shared second moment)
SHARED_MOMENT = "shared_moment"  # the param-group key that marks a group for the shared second moment


class ThresholdAdam(torch.optim.Adam):
    """torch Adam for every group but those whose param-group dict has SHARED_MOMENT = True, which step with
    one second moment per tensor shared over its elements (module docstring). State is saved and restored with
    the usual state_dict (exp_avg per element, exp_avg_sq a scalar, step)."""

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch's signature
        """One step: torch's Adam on the ordinary groups, the shared-moment update on the marked ones."""
        groups = self.param_groups
        ordinary = [g for g in groups if not g.get(SHARED_MOMENT)]
        loss = None
        self.param_groups = ordinary
        try:
            loss = super().step(closure)
        finally:
            self.param_groups = groups
        for group in groups:
            if group.get(SHARED_MOMENT):
                self._shared_step(group)
        return loss

    def _shared_step(self, group: dict) -> None:
        beta1, beta2 = group["betas"]
        for p in group["params"]:
            if p.grad is None:
                continue
            g = p.grad
            state = self.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros((), dtype=p.dtype, device=p.device)
            state["step"] += 1
            t = float(state["step"])
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m.mul_(beta1).add_(g, alpha=1.0 - beta1)
            v.mul_(beta2).add_(g.pow(2).mean(), alpha=1.0 - beta2)
            denom = (v / (1.0 - beta2**t)).sqrt() + group["eps"]
            update = (m / (1.0 - beta1**t) / denom).clamp_(-THRESHOLD_STEP_CLIP, THRESHOLD_STEP_CLIP)
            p.add_(update, alpha=-group["lr"])
