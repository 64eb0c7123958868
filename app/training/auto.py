"""The auto rules: the TrainConfig defaults decided at run time (most by the run's length), one function each.

Defaults follow SPEC §2 (Gemma Scope / "Jumping Ahead") for long runs. Short runs differ only through these rules
(applied by `TrainConfig.schedule()`; evidence in docs/training.md, summary in docs/training_recipe.md):
- warm-ups are capped at a fraction of the run (5 % for the LR, 20 % for λ / the target-L0 ramp; TrainConfig's
  `lr_warmup_fraction` and `l0_warmup_fraction`);
- `lr=None` means auto (`auto_lr`): 3 / steps up to 2048 steps, 3 / √(2048·steps) beyond, within [7e-5, 1e-2] —
  the paper's 7e-5 at the paper's scale (≥ 0.9M steps);
- `threshold_lr=None` means auto (`auto_threshold_lr`): max(lr, 10 / steps), so log θ can travel ~10 nats (θ init
  0.001 → the scale of the pre-activations) even in a few hundred Adam steps, held at 10 / 2048 past 2048 steps
  (a linear θ: see `group_lrs` in schedule.py);
- `bandwidth=None` means auto (`auto_bandwidth`): max(0.001, min(0.02, 6 / steps)) — the paper's ε for runs of
  ≥ 6k steps, a wider window (more pre-activations give θ a gradient, fewer latents die) for short runs;
- `batch_size=None` means auto (`default_batch_size`): SPEC's 4096 from 8.4M tokens on, smaller batches (down to
  256) below, so that a short run still takes 2048 optimiser steps;
- `adam_beta2=None` means auto (`auto_adam_beta2`): SPEC's 0.999 from 20k steps on, down to 0.99 for runs of
  ≤ 2k steps;
- `threshold_step=None` means auto (`auto_threshold_step`): the shared second moment for a linear θ, torch Adam
  per latent for log θ (resolved on construction, so train_config.json names the one used);
- `l0_reward=None` means auto (`auto_l0_reward`): 0.05 with the frequency penalty, else off (resolved on
  construction);
- `b_dec_lr_factor=None` means auto (`auto_b_dec_lr_factor`): 64 / d_in within [0.25, 1] on a centred run whose
  encoder reads x − b_dec, else 1 (resolved by the trainer once it knows d_in and whether it centres, so
  train_config.json names the factor used).
- `l0_correction=None` means auto (`auto_l0_correction`): 0.002 up to d_in 64, 0.01 from d_in 256, linear between
  (resolved by the trainer once it knows d_in, so train_config.json names the rate used).
"""

from __future__ import annotations

import math

# Sparsity when neither λ nor a target L0 is named: a typical L0 for residual-stream SAEs (Gemma Scope's
# released SAEs span roughly 20–150), smaller for small dictionaries.
DEFAULT_TARGET_L0 = 32.0


# Batch sizes of the auto rule: SPEC §2's for long runs, and the smallest a short run is given.
LONG_RUN_BATCH = 4096
MIN_AUTO_BATCH = 256
# Steps the auto batch size aims for. At a fixed token budget more, smaller steps leave fewer latents dead and
# reconstruct better (SmolLM2 layer 15, 1M tokens, held out: 31 % dead at batch 4096 = 256 steps, 2.2 % at
# 512 = 2048 steps), but with the auto LR of then (3 / steps) much longer runs settled too slowly to hit a small L0
# (planted test, L0 3: 3.20 at 2,400 steps, 4.13 at 4,800), and a larger LR for small batches, which fixes that,
# leaves 68–91 % of SmolLM2's latents dead (11–12 % when only θ's is raised); docs/training.md "Short runs:
# smaller batches".
AUTO_BATCH_STEPS = 2048

# The auto LR (`auto_lr`): SPEC §2's 7e-5 for long runs, 3 / steps for short ones (capped at 1e-2), bending to
# 3 / √(2048·steps) past AUTO_LR_BEND_STEPS (before 2026-12-04: 3 / steps at any length).
LONG_RUN_LR = 7e-5
SHORT_RUN_MAX_LR = 1e-2
AUTO_LR_SCALE = 3.0
AUTO_LR_BEND_STEPS = AUTO_BATCH_STEPS  # the run length the short-run rules were measured at

# θ's auto LR (`auto_threshold_lr`, before `group_lrs` scales a linear θ's to the activation width): at least the
# weights' LR, THRESHOLD_LR_SCALE / steps for short runs so θ can travel from its init to the pre-activations'
# scale, capped at THRESHOLD_MAX_LR, and no lower past AUTO_LR_BEND_STEPS (before 2026-12-04: 10 / steps at any
# length, which starved θ of long runs: docs/training.md, eleventh pass).
THRESHOLD_LR_SCALE = 10.0
THRESHOLD_MAX_LR = 0.1
# the quadratic objective's L0 reward rate with the frequency penalty (planted s4c / s16n, SmolLM2: thirteenth pass)
L0_REWARD_RATE = 0.05

# ε of the auto rule (`auto_bandwidth`): SPEC §2's for long runs, a wider straight-through window for short ones,
# where more pre-activations then give θ a gradient and fewer latents die.
LONG_RUN_BANDWIDTH = 0.001
SHORT_RUN_MAX_BANDWIDTH = 0.02
BANDWIDTH_SCALE = 6.0

# Adam β2 of the auto rule (`auto_adam_beta2`): SPEC §2's for long runs; short runs average the squared gradient
# over fewer steps. With 0.999 a 2048-step run still divides its step by the large gradients of the first
# steps (dense start, L0 falling) for hundreds of steps; latents that stop firing then barely move and die
# (SmolLM2 layer 15, 0.5M tokens, held out: 20 % dead at 0.999, 6 % at 0.99; docs/training.md "fifth pass").
LONG_RUN_BETA2 = 0.999
SHORT_RUN_BETA2 = 0.99
SHORT_RUN_BETA2_SPAN = 20.0


def default_batch_size(tokens: int) -> int:
    """The auto --batch-size: the largest power of two in [MIN_AUTO_BATCH, LONG_RUN_BATCH] that still gives
    AUTO_BATCH_STEPS optimiser steps over `tokens` (MIN_AUTO_BATCH when even that gives fewer)."""
    batch = LONG_RUN_BATCH
    while batch > MIN_AUTO_BATCH and tokens // batch < AUTO_BATCH_STEPS:
        batch //= 2
    return batch


def auto_lr(steps: int) -> float:
    """The auto peak LR: AUTO_LR_SCALE / steps up to AUTO_LR_BEND_STEPS, AUTO_LR_SCALE / √(AUTO_LR_BEND_STEPS·steps)
    beyond (continuous at the bend), within [LONG_RUN_LR, SHORT_RUN_MAX_LR].

    3 / steps keeps lr·steps (how far Adam can move a weight) fixed for short runs; past 2048 steps that starved
    longer runs (planted s2 at d = 256, 5,120 steps: max-|cos| 0.973 at 3 / steps, 0.983 at this rule, 0.998 at
    2.9e-3), so the LR falls as 1 / √steps there (docs/training.md, tenth pass).
    """
    steps = max(1, steps)
    lr = AUTO_LR_SCALE / steps if steps <= AUTO_LR_BEND_STEPS else AUTO_LR_SCALE / math.sqrt(AUTO_LR_BEND_STEPS * steps)
    return max(LONG_RUN_LR, min(SHORT_RUN_MAX_LR, lr))


def auto_threshold_lr(steps: int, lr: float) -> float:
    """θ's auto peak LR: max(lr, THRESHOLD_LR_SCALE / min(steps, AUTO_LR_BEND_STEPS)), within THRESHOLD_MAX_LR.

    θ has to keep tracking pre-activations that move at the weights' LR for the whole run, so past the bend its LR
    stays where a 2048-step run's is (planted s2 at d = 256, 5,120 steps: max-|cos| 0.982 at 10 / steps, 0.988–0.991
    at this rule, FVU 0.0144 → 0.0118–0.0129; docs/training.md, eleventh pass).
    """
    steps = min(max(1, steps), AUTO_LR_BEND_STEPS)
    return max(lr, min(THRESHOLD_MAX_LR, THRESHOLD_LR_SCALE / steps))


def auto_bandwidth(steps: int) -> float:
    """The auto straight-through bandwidth ε: BANDWIDTH_SCALE / steps within [LONG_RUN_BANDWIDTH,
    SHORT_RUN_MAX_BANDWIDTH] (SPEC's 0.001 from 6k steps on)."""
    return max(LONG_RUN_BANDWIDTH, min(SHORT_RUN_MAX_BANDWIDTH, BANDWIDTH_SCALE / max(1, steps)))


def auto_adam_beta2(steps: int) -> float:
    """The auto Adam β2: 1 − SHORT_RUN_BETA2_SPAN / steps within [SHORT_RUN_BETA2, LONG_RUN_BETA2], so that the
    second-moment average spans at most a twentieth of the run (SPEC's 0.999 from 20k steps on)."""
    return max(SHORT_RUN_BETA2, min(LONG_RUN_BETA2, 1.0 - SHORT_RUN_BETA2_SPAN / steps))


def auto_l0_reward(frequency_coefficient: float) -> float:
    """The quadratic objective's L0 reward rate when --l0-reward is not given: on (0.05) only with the frequency
    penalty, which taxes firing and leaves L0 under the target otherwise (docs/training.md, thirteenth pass)."""
    return L0_REWARD_RATE if frequency_coefficient > 0 else 0.0


def auto_threshold_step(threshold_param: str) -> str:
    """θ's Adam step when --threshold-step is not given: one second moment shared over latents for a linear θ
    (app/training/optim.py), torch Adam per latent for log θ. With log θ the gradient of latent i is
    θ_i·∂L/∂θ_i, so a shared moment (the mean over latents) is set by the large thresholds and a latent whose θ
    has fallen barely moves back: planted s2 at d = 256, 5,120 steps, log θ ran dense (L0 ≈ 250 for a target
    of 5, max-|cos| 0.22) with the shared step and reached max-|cos| 0.982 with per_latent (docs/training.md,
    twelfth pass)."""
    return "per_latent" if threshold_param == "log" else "shared"


def auto_apply_b_dec_to_input(threshold_param: str) -> bool:
    """Whether the encoder reads x − b_dec while training when --apply-b-dec-to-input is not given: yes for a
    linear θ, no for log θ. For a linear θ the learnt reference point keeps recovery when the inputs carry an
    offset the run does not centre (planted s8h at d = 256 with a mean at 2.8 % of the energy: max-|cos| 0.896 →
    0.912) and lowers the held-out FVU of both real models by 1.4-2.0 % (at an L0 0.7-1.1 % higher). It costs the
    centred planted settings at d = 256 a little (max-|cos| −0.002 to −0.008 on s4c and s16n). A log θ moves
    multiplicatively from its small init, and with the encoder's input moving under it a 1,024-step run stayed at
    3× its target L0 (planted s2: 16.7 for 5). docs/training.md, twenty-first pass."""
    return threshold_param == "linear"


def default_target_l0(d_sae: int) -> float:
    """The target L0 used when a run names neither --l0-coefficient nor --target-l0: min(32, d_sae / 8)."""
    return min(DEFAULT_TARGET_L0, d_sae / 8)


# --split-jaccard when not given: pairs of latents that fire on ≥ 90 % of the same tokens (with correlated codes) are
# split directions. Planted s2 at d = 256 (the case): max-|cos| 0.979 → 0.996 at 4M tokens, 0.988 → 0.998
# at 20M; s8h loses 0.015-0.02 of MCC; both real models unchanged (docs/training.md, twenty-third pass).
AUTO_SPLIT_JACCARD = 0.9

# --collapse-share when not given: latents under a third of the median gain ‖W_enc,i‖·‖W_dec,i‖ move onto the
# directions the residuals say the dictionary misses (app/training/missing_directions.py). Planted d = 256, 4M tokens:
# every setting better on every metric, s16n 0.840 → 0.961. SmolLM2 has no latent under the line at this share;
# Gemma 3 270M moves 6 in a 2M-token run, at the same held-out FVU (docs/training.md, 28th and 32nd passes).
AUTO_COLLAPSE_SHARE = 0.33


# --b-dec-lr-factor when not given (`auto_b_dec_lr_factor`, centred runs): 1 up to B_DEC_LR_WIDTH, falling as 1 / d_in
# beyond it to B_DEC_LR_MIN_FACTOR, the smallest factor measured (planted d = 256 and both real models).
B_DEC_LR_WIDTH = 64
B_DEC_LR_MIN_FACTOR = 0.25


def auto_b_dec_lr_factor(d_in: int, apply_b_dec_to_input: bool, centred: bool) -> float:
    """b_dec's LR as a multiple of the biases' (lr/√d_in) when --b-dec-lr-factor is not given: B_DEC_LR_WIDTH / d_in
    within [B_DEC_LR_MIN_FACTOR, 1] (1 at d_in 64, 0.25 from d_in 256) on a run that centres its inputs and whose
    encoder reads x − b_dec; 1 otherwise.

    Why it falls with d_in: the encoder reads x − b_dec, so a step of b_dec moves every pre-activation at once, and
    Adam moves each of b_dec's d_in coordinates by ~its LR whatever their scale. Why only on centred runs: there b_dec
    starts at the data's mean, already a good reference point, which a slower b_dec keeps; an uncentred run's b_dec
    has to travel to find one. Planted data at d = 256, 4M tokens (factor 1 → 0.25): the centred s4c 0.9450 / 0.9473
    → 0.9486 / 0.9596 max-|cos| (seeds 0 / 1) and s16n 0.8306 / 0.8224 → 0.8372 / 0.8331, while the uncentred s2
    and s8h moved within the seeds' spread (s2 at the issue's 20M tokens: seed 0 lost 0.0004 and 6 % of FVU, seed 1
    gained 0.0024); SmolLM2-135M (centred, d_in 576) level at the same L0; at d = 64 a factor of 0.25 costs the
    centred settings a little (mean 0.867 / 0.862 → 0.862 / 0.860). The gains are consistent only where the run
    centres, so only there. With log θ the encoder reads x and b_dec only offsets the reconstruction: not measured,
    so 1. docs/training.md, twenty-second and twenty-fifth passes.
    """
    if not (apply_b_dec_to_input and centred):
        return 1.0
    return max(B_DEC_LR_MIN_FACTOR, min(1.0, B_DEC_LR_WIDTH / max(1, d_in)))


# --l0-correction when not given (`auto_l0_correction`): L0_CORRECTION_NARROW's rate up to its width, rising linearly
# with d_in to L0_CORRECTION_WIDE's at its width and held there (the two widths measured: planted d = 64 and 256)
L0_CORRECTION_NARROW = (64, 0.002)
L0_CORRECTION_WIDE = (256, 0.01)


def auto_l0_correction(d_in: int) -> float:
    """The quadratic objective's target-correction rate when --l0-correction is not given: 0.002 up to d_in 64,
    0.01 from d_in 256, linear in d_in between (L0_CORRECTION_NARROW, L0_CORRECTION_WIDE).

    Why it grows with d_in: at d = 256 the correction at 0.002 is too slow for the planted s4c, whose L0 stays 5–8 %
    over its target while the reconstruction holds it there. At 0.01, planted data at d = 256, 4M tokens, seeds 0 / 1:
    max-|cos| up on 7 of 8 runs (s4c 0.9486 / 0.9596 → 0.9640 / 0.9682, s2, s16n +0.0007 to +0.003), s8h −0.001 at
    a lower FVU, every L0 within 1.5 % of its target; SmolLM2-135M (d_in 576) FVU 0.998× on 1M held-out tokens, no
    dead latents either way. At d = 64 it costs every setting (s4c −0.015), so narrow runs keep 0.002; at d = 128
    the line's 0.0047 leaves the three settings measured level on average. docs/training.md, twenty-seventh pass.
    """
    (w0, r0), (w1, r1) = L0_CORRECTION_NARROW, L0_CORRECTION_WIDE
    return r0 + (r1 - r0) * min(1.0, max(0.0, (d_in - w0) / (w1 - w0)))
