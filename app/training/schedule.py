"""Learning-rate schedule, λ warm-up, the target-L0 controller and the quadratic penalty's target correction.

Target-L0 mode (why a controller): with ε = 0.001 the threshold θ only gets gradient from pre-activations
within ±ε/2 of it, and Adam moves log θ by at most ~lr per step, so a fixed λ found by a sweep needs very
long runs before L0 settles. Instead λ is adapted every step from the measured L0 of the batch:

    log λ ← log λ + rate · clip(log(L0_batch / target_t), −1, 1)

and the target itself ramps geometrically from the dense L0 of the first batch down to the requested
target over the L0 warm-up, so the controller only ever tracks a slowly moving set-point (no integral
wind-up, no overshoot to L0 ≈ 0). Together with the threshold's own learning rate (config.threshold_lr),
which lets log θ travel ~10 nats in short runs, the run reaches the target within the warm-up.

Quadratic objective (why a correction): its penalty (2/T)(L0 − T)² balances the reconstruction's pull toward more
active latents at an L0 above T (SmolLM2 +6–9 %, planted dictionaries up to +14 %, SAELens's trainer alike). An
integral term moves the target T_pen the penalty pulls toward, after the L0 warm-up:

    log T_pen ← log T_pen − rate · log(L0_batch / T)   when |log(L0_batch / T)| ≤ 0.25,   T_pen in [T/2, T]

so the batch L0 settles on the T asked for (docs/training.md, sixth pass). Farther from T the penalty alone is
still closing the gap (L0 can sit at 2T for a while after the warm-up): integrating then would wind T_pen down
and leave L0 below T for the rest of the run (planted s16n: 9.5 for 10). But where the penalty's balance itself
lies outside the window, L0 never enters it and nothing corrects it (planted s4c, d = 256, 20M tokens, seed 1:
10.6 for 8 from the warm-up's end to the last step; thirty-third pass). So L0 gets as many steps outside the window
as the warm-up had (at least MIN_PATIENCE) to come in; an L0 still outside after that has stalled there, and the
correction acts on it as on one at the window's edge (e clipped to ±0.25). With the two-sided penalty ("both")
T_pen never rises above T: that penalty's bias is upward, and raising T_pen while L0 dips below T before the LR
decay (planted s2) made L0 land above T after it.

The one-sided penalty ("over", the default, docs/training.md seventh pass) leaves tokens below T free, so L0
settles *below* T_pen and T_pen must rise (T_pen in [T/2, 2T]); after the warm-up L0 first dips ~20 % under T
(SmolLM2), and the integral alone then overshoots (+6 %). A proportional term answers at once:

    log T_pen = I − k_p · ē,   I ← I − rate · e,   ē ← 0.9 · ē + 0.1 · e,   e = log(L0_batch / T) (in the window)

with k_p = 2 for "over" (0 for "both", the sixth pass's rule) and both terms kept in the bounds.

L0 reward (why, thirteenth pass): moving T_pen cannot push L0 *up* — the one-sided penalty is 0 below T_pen — so
anything else that taxes firing (the frequency penalty) leaves L0 under T (planted s4c 7.3 for 8, SmolLM2 19.4 for
32). After the warm-up a multiplier r ≤ 0 adds λ_q·r·L0_token to the penalty, a reward for firing, integrated
without a window (it only ever pays, so it cannot wind the L0 down):

    r ← min(0, r + rate_r · log(L0_batch / T))

rate_r = --l0-reward (auto: 0.05 with the frequency penalty, else 0 — without it the correction alone holds L0).
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

from app.training.config import Schedule, TrainConfig

log = logging.getLogger(__name__)

# θ's auto LR with the shared second moment grows as (d_in / WIDTH)·√(batch / BATCH), within [1, MAX_FACTOR]
# (`threshold_lr_factor`); MAX_FACTOR is the largest factor measured (planted d = 256, SmolLM2 at 2M tokens)
THRESHOLD_LR_WIDTH = 64
THRESHOLD_LR_BATCH = 4096
THRESHOLD_LR_MAX_FACTOR = 4.0


class GroupLRs(NamedTuple):
    """Peak learning rates of the trainer's three Adam groups (multiplied by `lr_factor` each step)."""

    weights: float  # W_enc and W_dec
    biases: float  # b_enc and b_dec
    threshold: float  # θ (linear) or log θ


def group_lrs(config: TrainConfig, sched: Schedule, d_in: int) -> GroupLRs:
    """The peak LRs of a run on d_in-wide activations.

    Linear θ (the default): θ, b_enc and b_dec are in activation units, and after the normalisation E‖x‖² = 1 a
    coordinate has RMS 1/√d_in; Adam moves a parameter by ~lr per step whatever its scale, so the biases step
    at lr/√d_in (the same as lr in units where every coordinate has RMS 1, as SAELens trains). θ's peak LR is
    `threshold_lr_factor` × `auto_threshold_lr`/√d_in (`Schedule.threshold_lr` scaled the same way).
    Measured on benchmarks/synthetic.py s2 with a minimal trainer, 1024 steps (docs/training.md): mean
    max-cosine 0.98 with the ÷√d_in scaling, 0.86 without.
    Log θ (Gemma Scope 1): every weight at lr and log θ at `sched.threshold_lr`.
    An explicit --threshold-lr is used as given.
    """
    if config.threshold_param == "log":
        return GroupLRs(sched.lr, sched.lr, sched.threshold_lr)
    root = math.sqrt(d_in)
    # θ must travel from its init to the scale of the pre-activations within the run (at most ~lr·steps): the
    # rule is `auto_threshold_lr`, shared with log θ; here it is only scaled to the activation width.
    auto = sched.threshold_lr / root * threshold_lr_factor(config.threshold_step, d_in, config.batch_size)
    theta = config.threshold_lr if config.threshold_lr is not None else auto
    return GroupLRs(sched.lr, sched.lr / root, theta)


def threshold_lr_factor(threshold_step: str, d_in: int, batch_size: int) -> float:
    """The factor on a linear θ's auto LR: (d_in / 64)·√(batch / 4096) within [1, 4] with the shared second moment
    (--threshold-step shared), 1 with torch Adam's per-latent one (the recipe before it).

    Why it grows with d_in: Adam moves each W_enc entry by ~lr, which moves a pre-activation by ~lr·‖x‖₁ ∝ lr·√d_in
    at E‖x‖² = 1, while θ at lr/√d_in moves ∝ 1/√d_in; the ratio of the two speeds goes as d_in, and when θ lags
    the sparsity pressure bends the encoder instead (planted s2 at d = 256: max-|cos| 0.94 at ×1, 0.977 at ×4).
    Why it shrinks with the batch: θ's gradient comes from the few pre-activations inside the STE window, so its
    noise grows as the batch shrinks (Adam's square-root rule); a larger factor then kills latents (SmolLM2-135M
    d_in 576 at batch 256: dead 3.7 % at ×2.25, 7.0 % at ×4). Calibrated where ×1 is best: d_in 64 at batch 4096
    (planted s4c: ×2 already loses max-|cos| and doubles dead latents). Capped at the largest factor measured
    (×4): wider models (Gemma 2 2B, d_in 2304) would get up to ×36, which nothing here has tried. docs/training.md,
    ninth pass.
    """
    if threshold_step != "shared":
        return 1.0
    factor = (d_in / THRESHOLD_LR_WIDTH) * math.sqrt(batch_size / THRESHOLD_LR_BATCH)
    return min(THRESHOLD_LR_MAX_FACTOR, max(1.0, factor))


def quadratic_coefficient(config: TrainConfig, d_in: int) -> float:
    """λ_q of the quadratic objective: --quadratic-coefficient, else 1/d_in (λ_q = 1 against the squared error
    summed in units where every coordinate has RMS 1, Gemma Scope 2's and SAELens's scale)."""
    return config.quadratic_coefficient if config.quadratic_coefficient is not None else 1.0 / d_in


def lr_factor(step: int, sched: Schedule) -> float:
    """Multiplier of the peak LR at `step` (0-based): linear warm-up, flat, linear decay to 0 at the end."""
    f = 1.0
    if sched.lr_warmup > 0 and step < sched.lr_warmup:
        f = (step + 1) / sched.lr_warmup
    if step >= sched.lr_decay_start and sched.total_steps > sched.lr_decay_start:
        f = min(f, (sched.total_steps - step) / (sched.total_steps - sched.lr_decay_start))
    return f


def step_lrs(step: int, sched: Schedule, peaks: GroupLRs, threshold_boost: float) -> GroupLRs:
    """The three groups' LRs at `step`: the peaks × `lr_factor`, and θ's also × `threshold_boost` before
    `sched.threshold_boost_end` — a fast θ while the dictionary forms (why it is off by default: the
    --threshold-boost help and docs/training.md, sixteenth pass)."""
    f = lr_factor(step, sched)
    boost = threshold_boost if step < sched.threshold_boost_end else 1.0
    return GroupLRs(peaks.weights * f, peaks.biases * f, peaks.threshold * f * boost)


def warmed_lambda(step: int, l0_coefficient: float, warmup: int) -> float:
    """λ mode: linear warm-up of λ from 0 over `warmup` steps (SPEC §2)."""
    if warmup <= 0:
        return l0_coefficient
    return l0_coefficient * min(1.0, (step + 1) / warmup)


class L0Controller:
    """Adapts λ so the batch L0 follows a target that ramps from dense to `target` over `warmup` steps."""

    def __init__(self, target: float, warmup: int, rate: float) -> None:
        self.target = target
        self.warmup = warmup
        self.rate = rate
        self.log_lambda = math.log(math.exp(-3.0) / target)  # small: the ramp starts near the dense L0
        self.l0_start: float | None = None  # L0 of the first batch (start of the ramp)

    @property
    def lam(self) -> float:
        return math.exp(self.log_lambda)

    def target_at(self, step: int) -> float:
        """The set-point at `step`: geometric interpolation from the first batch's L0 to the target."""
        if self.l0_start is None or self.warmup <= 0 or step + 1 >= self.warmup:
            return self.target
        frac = (step + 1) / self.warmup
        start = max(self.l0_start, self.target)
        return math.exp((1 - frac) * math.log(start) + frac * math.log(self.target))

    def update(self, step: int, l0: float) -> None:
        """Move log λ after a step in which the (global) batch L0 was `l0`."""
        if self.l0_start is None:
            self.l0_start = max(l0, self.target)
        err = math.log(max(l0, 1e-3) / self.target_at(step))
        self.log_lambda += self.rate * max(-1.0, min(1.0, err))
        self.log_lambda = max(-30.0, min(30.0, self.log_lambda))

    def state_dict(self) -> dict[str, float | None]:
        return {"log_lambda": self.log_lambda, "l0_start": self.l0_start}

    def load_state_dict(self, state: dict) -> None:
        self.log_lambda = float(state["log_lambda"])
        self.l0_start = None if state.get("l0_start") is None else float(state["l0_start"])


class TargetCorrection:
    """The quadratic objective's target correction: the target T_pen its penalty pulls toward, moved after the L0
    warm-up by an integral term (and, for the one-sided penalty, a proportional one) until the batch L0 sits on
    the requested target T, and the L0 reward r ≤ 0 that lifts an L0 something else pushed under T (module
    docstring)."""

    # T_pen / T per --quadratic-side: the two-sided penalty's bias is upward only, so T_pen never rises above T
    # there; the one-sided penalty ("over") leaves the tokens below T free and may settle on either side
    BOUNDS = {"both": (0.5, 1.0), "over": (0.5, 2.0)}
    PROPORTIONAL = {"both": 0.0, "over": 2.0}  # k_p per side (module docstring)
    ERROR_DECAY = 0.9  # ē ← 0.9·ē + 0.1·e: the proportional term follows a smoothed batch error
    WINDOW = 0.25  # integrate only while |log(L0_batch / T)| ≤ this (anti-windup) ...
    MIN_PATIENCE = 128  # ... or once L0 has stayed outside it for max(start, this) steps in a row (stalled)

    def __init__(self, target: float, start: int, rate: float, side: str = "both", reward_rate: float = 0.0) -> None:
        self.target = target
        self.start = start  # the first step that moves T_pen (the end of the L0 warm-up)
        self.rate = rate
        self.reward_rate = reward_rate
        self.reward = 0.0  # r ≤ 0: the L0 reward per firing, in units of λ_q (module docstring)
        self.bounds = tuple(math.log(b) for b in self.BOUNDS[side])
        self.gain = self.PROPORTIONAL[side]
        self.log_ratio = 0.0  # I: the integral part of log(T_pen / T)
        self.error = 0.0  # ē
        self.patience = max(start, self.MIN_PATIENCE)  # steps outside the window before L0 counts as stalled
        self.outside = 0  # steps in a row, after `start`, with L0 outside the window

    @property
    def penalty_target(self) -> float:
        lo, hi = self.bounds
        return self.target * math.exp(max(lo, min(hi, self.log_ratio - self.gain * self.error)))

    def update(self, step: int, l0: float) -> None:
        """Move log T_pen and the L0 reward after a step in which the (global) batch L0 was `l0`."""
        err = math.log(max(l0, 1e-3) / self.target)
        if step < self.start:
            return
        self.reward = min(0.0, self.reward + self.reward_rate * err)
        if abs(err) > self.WINDOW:
            self.outside += 1
            if self.outside <= self.patience:  # the penalty may still be closing the gap
                return
            if self.outside == self.patience + 1:
                log.info("L0 %.2f has stayed outside e^±%.2f of its target %.2f for %d steps: the target correction "
                         "now acts on it as on an L0 at the window's edge", l0, self.WINDOW, self.target, self.patience)
            err = math.copysign(self.WINDOW, err)  # stalled outside: as if at the window's edge
        else:
            self.outside = 0
        lo, hi = self.bounds
        self.log_ratio = max(lo, min(hi, self.log_ratio - self.rate * err))
        self.error = self.ERROR_DECAY * self.error + (1 - self.ERROR_DECAY) * err

    def state_dict(self) -> dict[str, float]:
        return {"log_ratio": self.log_ratio, "error": self.error, "reward": self.reward, "outside": self.outside}

    def load_state_dict(self, state: dict) -> None:
        self.log_ratio = float(state["log_ratio"])
        self.error = float(state.get("error", 0.0))  # checkpoints written before the proportional term
        self.reward = float(state.get("reward", 0.0))  # ... and before the L0 reward
        self.outside = int(state.get("outside", 0))  # ... and before the stall rule
