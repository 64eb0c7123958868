"""Training objectives of a JumpReLU SAE (TrainConfig.objective). All terms are in normalised units.

With pre = x·W_enc + b_enc, f = JumpReLU_θ(pre), H = H(pre − θ) (straight-through to θ, app/sae/ste.py),
mse = mean_batch ‖x − x̂‖² and T the target L0:

- "step" (Gemma Scope 1, "Jumping Ahead"): loss = mse + λ · mean_batch Σ_i H_i. λ is set by --l0-coefficient or
  adapted by the target-L0 controller (schedule.py). The SAE's own forward (dense or sparse path).
- "quadratic" (Gemma Scope 2): loss = mse + λ_q · mean_batch (2/T)(Σ_i H_i − T)²
  + λ_f · (d_sae/T) · Σ_i p_i², with p_i = mean_batch H_i the batch firing frequency of latent i.
  The quadratic pulls every token's L0 to T (no controller: λ_q = --quadratic-coefficient after the L0
  warm-up); the frequency penalty (λ_f = --frequency-coefficient) is minimal when the L0 is spread evenly
  over the latents, so it taxes dense latents. The (d_sae/T) factor makes it equal to T for uniform firing.
  --quadratic-side "over" (the default) keeps only the tokens above T: (2/T)·max(0, Σ_i H_i − T)². The
  two-sided form ("both", as published) also *rewards* firing on every token whose L0 is below T, which pays
  a latent to fire weakly almost everywhere (docs/training.md, seventh pass).
  T here is the target the trainer passes each step: the target L0, moved by --l0-correction after the warm-up
  (`TargetCorrection` in schedule.py) so the batch L0 settles on the one asked for; with the frequency penalty a
  reward λ_q·r·mean_batch Σ_i H_i (r ≤ 0, --l0-reward, same class) lifts an L0 that the penalty pushed under T.
- "tanh" (Anthropic, Jan 2025 update): loss = mse + λ · mean_batch Σ_i tanh(c · f_i · ‖W_dec,i‖)
  + λ_p · mean_batch Σ_i ReLU(θ_i − pre_i) · ‖W_dec,i‖ with c = --tanh-scale and λ_p = --pre-act-coefficient
  (the pre-activation loss pulls latents that never fire toward their threshold). λ is the controller's.

Any objective can add AuxK for dead latents (`with_dead_aux`, --aux-coefficient α, on by default): latents not
active over the last --aux-dead-window tokens reconstruct the residual e = x − x̂ with each token's top-k of their
ReLU pre-activations, loss += α·‖e − ê‖²/‖e‖² (OpenAI's "Scaling and evaluating sparse autoencoders", there for
TopK SAEs). The trainer applies it to the last step (--aux-through-decay; false: until the LR decay begins).
With --aux-collapse-share S > 0 (off by default) AuxK's set also takes the collapsed latents (`aux_latents`): those
whose gain ‖W_enc,i‖·‖W_dec,i‖ is under S × the median. They fire now and then with tiny codes (kept alive by the
dead latents' θ reset), so they are never dead and the reconstruction teaches them almost nothing; AuxK aligns them
with what the others miss. On planted data that helps where few latents collapse and costs where a quarter of them
do (docs/training.md, thirtieth pass).

"tanh" runs the dense path (it needs every pre-activation); "step" and "quadratic" (with or without the frequency
penalty, which needs only each latent's count of active tokens: it ran dense until 2026-12-04) take the SAE's
sparse path once few latents fire.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from app.sae import JumpReLUSAE, SAEOutput
from app.sae.ste import jumprelu
from app.training.config import QUADRATIC_SIDES
from app.training.resample import collapsed_latents

OBJECTIVES = ("step", "quadratic", "tanh")

LossFn = Callable[[JumpReLUSAE, torch.Tensor, float], SAEOutput]


def _dense_parts(sae: JumpReLUSAE, x: torch.Tensor):
    """(x_n, pre, θ, f, x̂_n, mse) of the dense forward in normalised units (as JumpReLUSAE.forward)."""
    x_n = x.to(sae.dtype) * sae.input_scale
    pre = sae.pre_acts(x)
    theta = sae.threshold
    f = jumprelu(pre, theta, sae.cfg.bandwidth)
    x_hat_n = f @ sae.W_dec + sae.b_dec
    mse = (x_n - x_hat_n).pow(2).sum(-1).mean()
    return x_n, pre, theta, f, x_hat_n, mse


def quadratic_penalty(l0_tokens: torch.Tensor, target_l0: float, side: str = "both") -> torch.Tensor:
    """Per token (2/T)(L0 − T)², or (2/T)·max(0, L0 − T)² when `side` is "over" (module docstring)."""
    gap = l0_tokens - target_l0
    if side == "over":
        gap = gap.clamp_min(0)
    elif side != "both":
        raise ValueError(f"unknown quadratic side {side!r}; choose one of {', '.join(QUADRATIC_SIDES)}")
    return (2.0 / target_l0) * gap.pow(2)


def quadratic_loss(sae: JumpReLUSAE, x: torch.Tensor, coefficient: float, target_l0: float,
                   frequency_coefficient: float = 0.0, sparse: bool | None = None, side: str = "both",
                   reward: float = 0.0) -> SAEOutput:
    """Gemma Scope 2: mse + λ_q·mean (2/T)(L0_token − T)² + λ_f·(d_sae/T)·Σ_i p_i² (module docstring); `side`
    "over" penalises only the tokens whose L0 is above T; `reward` r ≤ 0 adds λ_q·r·mean L0_token.

    It runs on the SAE's own path (sparse once few latents fire, as "step" does): p_i is latent i's count of
    active tokens over the batch size, and its straight-through gradient reaches θ on either path.
    """
    x_hat_n, f, mse, l0_tokens, counts = sae.loss_parts(x, sparse)
    loss = mse + coefficient * quadratic_penalty(l0_tokens, target_l0, side).mean()
    if reward:
        loss = loss + coefficient * reward * l0_tokens.mean()
    if frequency_coefficient > 0:
        p = counts / l0_tokens.numel()
        loss = loss + frequency_coefficient * (sae.d_sae / target_l0) * p.pow(2).sum()
    l0 = l0_tokens.mean()
    sae._active_fraction = l0.detach() / sae.d_sae
    return SAEOutput(x_hat_n / sae.input_scale, f, mse, l0, loss)


def tanh_loss(sae: JumpReLUSAE, x: torch.Tensor, coefficient: float, tanh_scale: float = 4.0,
              pre_act_coefficient: float = 0.0) -> SAEOutput:
    """Anthropic: mse + λ·mean Σ tanh(c·f·‖W_dec‖) + λ_p·mean Σ ReLU(θ − pre)·‖W_dec‖ (module docstring)."""
    _, pre, theta, f, x_hat_n, mse = _dense_parts(sae, x)
    w_norm = torch.linalg.vector_norm(sae.W_dec, dim=1)
    sparsity = torch.tanh(tanh_scale * f * w_norm).sum(-1).mean()
    loss = mse + coefficient * sparsity
    if pre_act_coefficient > 0:
        loss = loss + pre_act_coefficient * ((theta - pre).relu() * w_norm).sum(-1).mean()
    with torch.no_grad():
        l0 = (pre > theta).sum(-1).to(pre.dtype).mean()
    sae._active_fraction = l0 / sae.d_sae
    return SAEOutput(x_hat_n / sae.input_scale, f, mse, l0, loss)


def loss_fn(objective: str, target_l0: float | None = None, frequency_coefficient: float = 0.0,
            tanh_scale: float = 4.0, pre_act_coefficient: float = 0.0, quadratic_side: str = "both",
            reward: float = 0.0) -> LossFn | None:
    """The loss of `objective` as fn(sae, x, λ) → SAEOutput; None for "step" (the SAE's own forward). `reward`: the
    quadratic objective's L0 reward r ≤ 0 (module docstring)."""
    if objective == "step":
        return None
    if objective == "quadratic":
        if target_l0 is None:
            raise ValueError("the quadratic objective needs --target-l0")
        return lambda sae, x, lam: quadratic_loss(sae, x, lam, target_l0, frequency_coefficient,
                                                  side=quadratic_side, reward=reward)
    if objective == "tanh":
        return lambda sae, x, lam: tanh_loss(sae, x, lam, tanh_scale, pre_act_coefficient)
    raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")


def dead_aux_loss(sae: JumpReLUSAE, x: torch.Tensor, x_hat_n: torch.Tensor, dead: torch.Tensor, k: int) -> torch.Tensor:
    """AuxK for the latents `dead` (indices): ‖e − ê‖² / ‖e‖² with e = x_n − x̂_n (no gradient) and ê the decoding
    of each token's top-k ReLU pre-activations among the dead latents.

    Dead latents get no gradient from the reconstruction; this one aligns their encoder and decoder rows with what
    the live latents miss, so that once their pre-activations cross θ they fire on something useful.
    """
    x_n = x.to(sae.dtype).reshape(-1, sae.cfg.d_in) * sae.input_scale
    e = (x_n - x_hat_n.reshape(-1, sae.cfg.d_in)).detach()
    pre = sae.pre_acts(x, dead).reshape(-1, dead.numel()).relu()
    top = pre.topk(min(k, dead.numel()), dim=-1)
    e_hat = torch.zeros_like(pre).scatter(-1, top.indices, top.values) @ sae.W_dec[dead]
    return (e - e_hat).pow(2).sum(-1).mean() / e.pow(2).sum(-1).mean().clamp_min(1e-12)


@torch.no_grad()
def aux_latents(sae: JumpReLUSAE, dead: torch.Tensor, collapse_share: float) -> torch.Tensor:
    """The latents AuxK trains: `dead` (indices) and, with `collapse_share` > 0, the collapsed latents
    (`collapsed_latents`: gain under that share of the median), sorted, each once."""
    if collapse_share <= 0:
        return dead
    return torch.unique(torch.cat([dead, collapsed_latents(sae, collapse_share).to(dead.device)]))


@torch.no_grad()
def dead_max_pre(sae: JumpReLUSAE, x: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
    """The largest pre-activation of each latent in `dead` (indices) over the batch `x` (raw activations)."""
    return sae.pre_acts(x, dead).reshape(-1, dead.numel()).max(0).values


@torch.no_grad()
def lower_thresholds_(sae: JumpReLUSAE, latents: torch.Tensor, top: torch.Tensor) -> None:
    """θ_i ← min(θ_i, top_i) for the `latents` whose `top_i` > 0 (the others keep θ).

    With `top` the batch maximum of a dead latent's pre-activation (`dead_max_pre`), θ then sits at the top of
    the latent's pre-activations: inside the straight-through window, so the reconstruction and the sparsity
    penalty decide again whether it fires. A latent whose pre-activation is ≤ 0 on every token is left to AuxK.
    """
    top = top.to(sae.device, sae.dtype)
    lower = (top > 0) & (top < sae.threshold[latents])
    sae.assign_threshold_(latents[lower], top[lower])


def with_dead_aux(objective: LossFn | None, dead: torch.Tensor, coefficient: float, k: int) -> LossFn:
    """`objective` (None: the SAE's own loss) plus α·AuxK over the latents `dead` (`dead_aux_loss`)."""
    def fn(sae: JumpReLUSAE, x: torch.Tensor, lam: float) -> SAEOutput:
        out = sae(x, lam) if objective is None else objective(sae, x, lam)
        aux = dead_aux_loss(sae, x, out.x_hat * sae.input_scale, dead, k)
        return out._replace(loss=out.loss + coefficient * aux)
    return fn
