"""TrainConfig: every knob of SAE training in one validated, documented dataclass (saved as train_config.json).

Defaults follow SPEC §2 (Gemma Scope / "Jumping Ahead") for long runs. Short runs differ only through
rules that depend on the run length (see `schedule()` and docs/training_recipe.md):
- warm-ups are capped at a fraction of the run (5 % for the LR, 20 % for λ / the target-L0 ramp);
- `lr=None` means auto (`auto_lr`): 3 / steps up to 2048 steps, 3 / √(2048·steps) beyond, within [7e-5, 1e-2] —
  the paper's 7e-5 at the paper's scale (≥ 0.9M steps);
- `threshold_lr=None` means auto (`auto_threshold_lr`): max(lr, 10 / steps), so log θ can travel ~10 nats (θ init
  0.001 → the scale of the pre-activations) even in a few hundred Adam steps, held at 10 / 2048 past 2048 steps
  (a linear θ: see `group_lrs` in schedule.py);
- `bandwidth=None` means auto: max(0.001, min(0.02, 6 / steps)) — the paper's ε for runs of ≥ 6k steps, a
  wider window (more pre-activations give θ a gradient, fewer latents die) for short runs;
- `batch_size=None` means auto (`default_batch_size`): SPEC's 4096 from 8.4M tokens on, smaller batches (down to
  256) below, so that a short run still takes 2048 optimiser steps;
- `adam_beta2=None` means auto (`auto_adam_beta2`): SPEC's 0.999 from 20k steps on, down to 0.99 for runs of
  ≤ 2k steps;
- `threshold_step=None` means auto (`auto_threshold_step`): the shared second moment for a linear θ, torch Adam
  per latent for log θ (resolved on construction, so train_config.json names the one used);
- `l0_reward=None` means auto (`auto_l0_reward`): 0.05 with the frequency penalty, else off (resolved on
  construction).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple, get_type_hints

from app.lm.hooks import HOOK_KINDS

QUADRATIC_SIDES = ("over", "both")  # the tokens the quadratic penalty acts on: above the target only, or all
THRESHOLD_STEPS = ("shared", "per_latent")  # --threshold-step: θ's Adam second moment over all latents, or per latent

CONFIG_FILE = "train_config.json"


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


def default_target_l0(d_sae: int) -> float:
    """The target L0 used when a run names neither --l0-coefficient nor --target-l0: min(32, d_sae / 8)."""
    return min(DEFAULT_TARGET_L0, d_sae / 8)


@dataclass(frozen=True)
class Schedule:
    """Run-length dependent numbers derived from a TrainConfig (what the trainer actually uses)."""

    total_steps: int  # optimiser steps = tokens // batch_size
    lr: float  # peak learning rate of the weights
    bandwidth: float  # ε of the θ straight-through gradient
    threshold_lr: float  # peak learning rate of log θ
    adam_beta2: float  # Adam's second-moment decay
    lr_warmup: int  # steps of linear LR warm-up
    lr_decay_start: int  # step where the linear decay to 0 begins
    l0_warmup: int  # steps of the λ warm-up (λ mode) or the target-L0 ramp (target mode)
    threshold_boost_end: int  # θ's LR is multiplied by --threshold-boost before this step
    dead_window: int  # N tokens of "dead = never active over the last N tokens"
    log_every: int  # steps between metrics lines
    checkpoint_every: int  # steps between checkpoints (0: only the final save)


def _doc(default: Any, help: str, *, cli: bool = True) -> Any:
    """A TrainConfig field with its documentation (`help`); `cli=False`: `jumpscope train` has no generated flag
    for it (it has a hand-written one, such as --out or --no-normalize)."""
    return field(default=default, metadata={"help": help, "cli": cli})


@dataclass
class TrainConfig:
    """Everything that defines an SAE training run. Validated on construction; bad values raise ValueError.

    Each field's `_doc` text is its documentation and the help of its `jumpscope train` flag (`train_options()`;
    same name with dashes, the default appended when it is not None).
    """

    # --- where the activations come from: an LM + corpus, or an activation file ----------------------------
    model: str | None = _doc(None, "HF model folder, .gguf file or hub id to harvest activations from")
    hook: str = _doc("resid_post", "hook kind: resid_pre | resid_post | attn_out | mlp_out")
    layer: int | None = _doc(None, "block index of the hook")
    corpus: str | None = _doc(None, "text/.jsonl/.parquet file or folder, or hf:NAME[:split]")
    context_size: int | None = _doc(None, "tokens per context (default: min(1024, model max positions))")
    lm_batch_size: int = _doc(8, "contexts per LM forward while harvesting")
    lm_dtype: str | None = _doc(None, "LM dtype (default bf16 on CUDA, float32 on CPU)")
    activations: str | None = _doc(None, "safetensors file with `activations` [N, d_in] (instead of --model/--corpus)")
    activation_cache: str | None = _doc(None, "folder of harvested activation shards, reused across a sweep")
    buffer_tokens: int = _doc(262_144, "mixing-buffer size in tokens: activations are shuffled within blocks of "
                                       "this many tokens")
    holdout_every: int = _doc(20, "hold every N-th corpus document out of training for `jumpscope eval` (0: none)")
    outlier_factor: float = _doc(10.0, "skip positions whose activation norm exceeds this × the median norm "
                                       "(0: off), as eval and the index do (app/lm/outliers.py)")
    # --- the SAE ----------------------------------------------------------------------------------------
    d_sae: int = _doc(0, "number of latents (required)")
    d_in: int | None = _doc(None, "expected activation width (checked against the data; default: taken from it)")
    threshold_init: float = _doc(0.001, "θ at init, normalised units")
    threshold_param: str = _doc("linear", "how θ trains: linear (θ itself, projected to ≥ 0) | log (exp(log θ), "
                                          "Gemma Scope 1); see docs/training.md")
    threshold_step: str | None = _doc(None, "how θ steps: shared (Adam with one second moment over all latents, "
                                               "so a latent's step follows the size of its gradient; θ's auto LR "
                                               "grows with d_in; linear θ only) | per_latent (torch Adam, the "
                                               "recipe before 2026-12-04); default: shared for a linear θ, "
                                               "per_latent for log θ; see app/training/optim.py")
    decoder: str = _doc("free", "free (rows learn their norm from --decoder-init-norm; folded to unit rows at save) "
                                "| unit (rows renormalised every step, Gemma Scope 1)")
    decoder_init_norm: float = _doc(0.1, "free decoder: norm of every W_dec row at init (W_enc = W_decᵀ)")
    bandwidth: float | None = _doc(None, "θ straight-through bandwidth ε, normalised units (default auto: 0.001 "
                                         "from 6k steps, up to 0.02)")
    normalize: bool = _doc(True, "scale inputs by one scalar so E‖x‖² = 1 (folded into the weights when saving; "
                                 "flag: --no-normalize)", cli=False)
    norm_tokens: int = _doc(65_536, "sample size for the input normalisation")
    # --- sparsity: exactly one of the two -------------------------------------------------------------------
    l0_coefficient: float | None = _doc(None, "λ of loss = mse + λ·L0, after its warm-up (or use --target-l0)")
    target_l0: float | None = _doc(None, "target mean L0; λ is adapted by a controller, see schedule.py "
                                         "(or use --l0-coefficient)")
    l0_warmup_steps: int = _doc(10_000, "λ warm-up from 0 (λ mode) / target ramp from dense (target mode) steps, "
                                        "at most --l0-warmup-fraction of the run")
    l0_warmup_fraction: float = _doc(0.2, "cap of the L0 warm-up as a fraction of the run")
    controller_rate: float = _doc(0.05, "target-L0 controller gain of log λ on log(L0 / target) per step, "
                                        "clipped to ±1")
    # --- objective (app/training/objectives.py) ---------------------------------------------------------------
    objective: str | None = _doc(None, "step (Gemma Scope 1) | quadratic (Gemma Scope 2) | tanh (Anthropic); "
                                       "default: quadratic with a target L0, step with --l0-coefficient; "
                                       "see docs/training.md")
    quadratic_coefficient: float | None = _doc(None, "quadratic: λ_q of the (2/T)(L0 − T)² penalty (no controller; "
                                                     "default 1/d_in)")
    quadratic_side: str = _doc("over", "quadratic: over (penalise only tokens whose L0 is above the target) | "
                                       "both (every token's distance to it, Gemma Scope 2 as published)")
    l0_correction: float = _doc(0.002, "quadratic: rate of the integral correction that moves the penalty's target "
                                       "so the batch L0 settles on --target-l0 (after the L0 warm-up; 0 = off, "
                                       "Gemma Scope 2 as published)")
    frequency_coefficient: float = _doc(0.0, "quadratic: weight λ_f of the firing-frequency penalty")
    l0_reward: float | None = _doc(None, "quadratic: rate of the L0 reward that lifts an L0 pushed under --target-l0 "
                                         "(after the L0 warm-up; default auto: 0.05 with --frequency-coefficient "
                                         "> 0, else 0 = off)")
    tanh_scale: float = _doc(4.0, "tanh: c of tanh(c·f·‖W_dec‖)")
    aux_coefficient: float = _doc(1 / 32, "weight α of the AuxK loss that trains dead latents on the residual "
                                  "(any objective; 0 = off)")
    aux_k: int | None = _doc(None, "AuxK: dead latents per token that reconstruct the residual (default d_in / 2)")
    aux_dead_window: int = _doc(16_384, "AuxK: tokens without firing before a latent counts as dead for it "
                                        "(65,536 before 2026-12-04; docs/training.md, ninth pass)")
    aux_threshold_reset: bool = _doc(True, "AuxK: after each step, lower each dead latent's θ to its largest "
                                           "pre-activation in the batch when that is > 0 (while AuxK runs)")
    aux_through_decay: bool = _doc(True, "AuxK (and its θ reset) run to the last step; false: they stop when the LR "
                                         "decay begins (the recipe before 2026-12-05; docs/training.md, "
                                         "fifteenth pass)")
    pre_act_coefficient: float = _doc(3e-6, "tanh: weight λ_p of the pre-activation loss ReLU(θ − pre)·‖W_dec‖")
    # --- optimisation ------------------------------------------------------------------------------------
    tokens: int = _doc(0, "training tokens in total (required); steps = tokens // batch size")
    batch_size: int | None = _doc(None, "tokens per optimiser step, over all ranks (default auto: 4096 from "
                                        "8.4M tokens on, halved down to 256 so a run takes 2048 steps)")
    lr: float | None = _doc(None, "peak learning rate (default auto: 3/steps up to 2048 steps, 3/√(2048·steps) beyond, "
                                       "within [7e-5, 1e-2])")
    threshold_lr: float | None = _doc(None, "peak learning rate of θ (default auto: max(lr, 10/min(steps, 2048)), "
                                            "divided by √d_in for a linear θ and multiplied by "
                                            "(d_in/64)·√(batch/4096) within [1, 4] with --threshold-step shared)")
    threshold_boost: float = _doc(1.0, "θ's LR is multiplied by this over the first --threshold-boost-fraction "
                                        "of the run, while the dictionary forms (1 = off; 3.2 recovers more of "
                                        "uncorrelated planted dictionaries but costs SmolLM2 FVU and, on one "
                                        "seed, 8 % dead latents; docs/training.md, sixteenth pass)")
    threshold_boost_fraction: float = _doc(0.1, "the first fraction of the run over which --threshold-boost applies")
    lr_warmup_steps: int = _doc(1_000, "linear LR warm-up steps, at most --lr-warmup-fraction of the run")
    lr_warmup_fraction: float = _doc(0.05, "cap of the LR warm-up as a fraction of the run")
    lr_decay_fraction: float = _doc(0.2, "linear decay to 0 over this last fraction of the run")
    adam_beta1: float = _doc(0.9, "Adam β1")
    adam_beta2: float | None = _doc(None, "Adam β2 (default auto: 0.999 from 20k steps, down to 0.99 for runs of "
                                          "≤ 2k steps)")
    adam_eps: float = _doc(1e-8, "Adam ε")
    grad_clip: float = _doc(1.0, "max global gradient norm, 0 = off")
    # --- runtime -----------------------------------------------------------------------------------------
    out: str = _doc("", "output SAE folder (required)", cli=False)
    resume: bool = _doc(False, "continue from the latest checkpoint in `out`", cli=False)
    device: str | None = _doc(None, "cpu | cuda | cuda:N (default: CUDA when present)")
    autocast: bool | None = _doc(None, "bf16 autocast of the SAE forward (default: on for CUDA, off on CPU)")
    seed: int = _doc(0, "random seed (init, shuffling and everything random)")
    log_every: int | None = _doc(None, "steps between metrics lines (default min(100, steps/20), at least 1)")
    checkpoint_every: int | None = _doc(None, "steps between checkpoints, 0 = none (default min(1000, steps/4))")
    keep_checkpoints: int = _doc(2, "checkpoints kept on disk (the newest and the ones before it)")
    dead_window: int | None = _doc(None, "N tokens of 'dead = not active over the last N tokens' "
                                         "(default min(1e7, tokens/4))")
    progress: bool = _doc(True, "tqdm progress bar, rank 0 only (flag: --no-progress)", cli=False)
    stop_at_step: int | None = _doc(None, "pause after this step (checkpoint written); continue later with --resume")

    def __post_init__(self) -> None:
        if self.threshold_step is None:
            self.threshold_step = auto_threshold_step(self.threshold_param)
        if self.l0_reward is None:
            self.l0_reward = auto_l0_reward(self.frequency_coefficient)
        self._check_source()
        self._check_numbers()

    # --- validation --------------------------------------------------------------------------------------
    def _check_source(self) -> None:
        has_lm = self.model is not None or self.corpus is not None
        if self.activations is not None and has_lm:
            raise ValueError("give either --activations FILE or --model/--corpus, not both")
        if self.activations is None:
            if not self.model or not self.corpus:
                raise ValueError("give --activations FILE, or --model M with --corpus PATH (and --layer L)")
            if self.layer is None:
                raise ValueError("--layer is required when harvesting from a model")
            if self.hook not in HOOK_KINDS:
                raise ValueError(f"unknown --hook {self.hook!r}; choose one of {', '.join(HOOK_KINDS)}")
            if self.layer < 0:
                raise ValueError(f"--layer must be >= 0, got {self.layer}")
        if self.activation_cache is not None and self.activations is not None:
            raise ValueError("--activation-cache only applies when harvesting from a model")
        if not self.out:
            raise ValueError("--out DIR is required")

    def _check_numbers(self) -> None:
        if self.l0_coefficient is not None and self.target_l0 is not None:
            raise ValueError("give exactly one of --l0-coefficient or --target-l0")
        if self.l0_coefficient is None and self.target_l0 is None and self.d_sae > 0:
            self.target_l0 = default_target_l0(self.d_sae)
        # Auto batch size: remembered, so that --resume follows the batch the resumed run was trained with.
        self._auto_batch = self.batch_size is None
        if self.batch_size is None:
            self.batch_size = default_batch_size(self.tokens)
        if self.objective is None:  # the recipe chosen by benchmarks/synthetic.py (docs/training.md)
            self.objective = "step" if self.l0_coefficient is not None else "quadratic"
        checks: list[tuple[bool, str]] = [
            (self.d_sae > 0, f"--d-sae must be a positive integer, got {self.d_sae}"),
            (self.d_in is None or self.d_in > 0, f"--d-in must be positive, got {self.d_in}"),
            (self.batch_size > 0, f"--batch-size must be positive, got {self.batch_size}"),
            (self.tokens >= self.batch_size,
             f"--tokens must be at least one batch ({self.batch_size}), got {self.tokens}"),
            (self.l0_coefficient is None or (math.isfinite(self.l0_coefficient) and self.l0_coefficient >= 0),
             f"--l0-coefficient must be a finite number >= 0, got {self.l0_coefficient}"),
            (self.target_l0 is None or (math.isfinite(self.target_l0) and 0 < self.target_l0 < self.d_sae),
             f"--target-l0 must be in (0, d_sae={self.d_sae}), got {self.target_l0}"),
            (self.lr is None or 0 < self.lr <= 1, f"--lr must be in (0, 1], got {self.lr}"),
            (self.threshold_lr is None or 0 < self.threshold_lr <= 1,
             f"--threshold-lr must be in (0, 1], got {self.threshold_lr}"),
            (math.isfinite(self.threshold_boost) and 0 < self.threshold_boost <= 100,
             f"--threshold-boost must be in (0, 100], got {self.threshold_boost}"),
            (0 <= self.threshold_boost_fraction <= 1,
             f"--threshold-boost-fraction must be in [0, 1], got {self.threshold_boost_fraction}"),
            (0 < self.threshold_init < 1e6, f"--threshold-init must be > 0, got {self.threshold_init}"),
            (self.bandwidth is None or 0 < self.bandwidth < 1e6, f"--bandwidth must be > 0, got {self.bandwidth}"),
            (0 <= self.adam_beta1 < 1 and (self.adam_beta2 is None or 0 <= self.adam_beta2 < 1),
             "Adam betas must be in [0, 1)"),
            (0 < self.adam_eps < 1, f"--adam-eps must be in (0, 1), got {self.adam_eps}"),
            (self.grad_clip >= 0, f"--grad-clip must be >= 0, got {self.grad_clip}"),
            (self.lr_warmup_steps >= 0 and self.l0_warmup_steps >= 0, "warm-up steps must be >= 0"),
            (0 <= self.lr_warmup_fraction <= 1 and 0 <= self.l0_warmup_fraction <= 1,
             "warm-up fractions must be in [0, 1]"),
            (0 <= self.lr_decay_fraction <= 1, f"--lr-decay-fraction must be in [0, 1], got {self.lr_decay_fraction}"),
            (self.controller_rate > 0, f"--controller-rate must be > 0, got {self.controller_rate}"),
            (self.objective in ("step", "quadratic", "tanh"),
             f"--objective must be step, quadratic or tanh, got {self.objective!r}"),
            (self.quadratic_side in QUADRATIC_SIDES,
             f"--quadratic-side must be over or both, got {self.quadratic_side!r}"),
            (self.objective != "quadratic" or self.target_l0 is not None,
             "--objective quadratic needs --target-l0 (it penalises (L0 − target)²)"),
            (self.threshold_step in THRESHOLD_STEPS,
             f"--threshold-step must be {' or '.join(THRESHOLD_STEPS)}, got {self.threshold_step!r}"),
            (not (self.threshold_param == "log" and self.threshold_step == "shared"),
             "--threshold-step shared needs --threshold-param linear: a log θ's gradient scales with θ, so one "
             "shared second moment freezes the small thresholds and the SAE runs dense (use per_latent, the "
             "default for log θ; docs/training.md, twelfth pass)"),
            (self.threshold_param in ("linear", "log"),
             f"--threshold-param must be linear or log, got {self.threshold_param!r}"),
            (self.decoder in ("free", "unit"), f"--decoder must be free or unit, got {self.decoder!r}"),
            (math.isfinite(self.decoder_init_norm) and self.decoder_init_norm > 0,
             f"--decoder-init-norm must be > 0, got {self.decoder_init_norm}"),
            (self.quadratic_coefficient is None
             or (math.isfinite(self.quadratic_coefficient) and self.quadratic_coefficient > 0),
             f"--quadratic-coefficient must be > 0, got {self.quadratic_coefficient}"),
            (math.isfinite(self.l0_correction) and 0 <= self.l0_correction <= 1,
             f"--l0-correction must be in [0, 1], got {self.l0_correction}"),
            (math.isfinite(self.l0_reward) and 0 <= self.l0_reward <= 1,
             f"--l0-reward must be in [0, 1], got {self.l0_reward}"),
            (math.isfinite(self.frequency_coefficient) and self.frequency_coefficient >= 0,
             f"--frequency-coefficient must be >= 0, got {self.frequency_coefficient}"),
            (math.isfinite(self.tanh_scale) and self.tanh_scale > 0,
             f"--tanh-scale must be > 0, got {self.tanh_scale}"),
            (math.isfinite(self.aux_coefficient) and self.aux_coefficient >= 0,
             f"--aux-coefficient must be >= 0, got {self.aux_coefficient}"),
            (self.aux_k is None or self.aux_k >= 1, f"--aux-k must be >= 1, got {self.aux_k}"),
            (self.aux_dead_window >= 1, f"--aux-dead-window must be >= 1, got {self.aux_dead_window}"),
            (math.isfinite(self.pre_act_coefficient) and self.pre_act_coefficient >= 0,
             f"--pre-act-coefficient must be >= 0, got {self.pre_act_coefficient}"),
            (self.buffer_tokens > 0, f"--buffer-tokens must be positive, got {self.buffer_tokens}"),
            (self.norm_tokens > 0, f"--norm-tokens must be positive, got {self.norm_tokens}"),
            (self.lm_batch_size > 0, f"--lm-batch-size must be positive, got {self.lm_batch_size}"),
            (self.holdout_every == 0 or self.holdout_every >= 2,
             f"--holdout-every must be 0 (nothing held out) or >= 2, got {self.holdout_every}"),
            (math.isfinite(self.outlier_factor) and self.outlier_factor >= 0,
             f"--outlier-factor must be >= 0 (0 turns outlier skipping off), got {self.outlier_factor}"),
            (self.context_size is None or self.context_size >= 2,
             f"--context-size must be >= 2, got {self.context_size}"),
            (self.log_every is None or self.log_every > 0, f"--log-every must be positive, got {self.log_every}"),
            (self.checkpoint_every is None or self.checkpoint_every >= 0,
             f"--checkpoint-every must be >= 0, got {self.checkpoint_every}"),
            (self.keep_checkpoints >= 1, f"--keep-checkpoints must be >= 1, got {self.keep_checkpoints}"),
            (self.dead_window is None or self.dead_window > 0,
             f"--dead-window must be positive, got {self.dead_window}"),
            (self.seed >= 0, f"--seed must be >= 0, got {self.seed}"),
            (self.stop_at_step is None or self.stop_at_step > 0,
             f"--stop-at-step must be positive, got {self.stop_at_step}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    # --- derived numbers -------------------------------------------------------------------------------------
    def schedule(self) -> Schedule:
        """The run-length dependent schedule (warm-ups scaled down for short runs, auto learning rates)."""
        steps = max(1, self.tokens // self.batch_size)
        lr = self.lr if self.lr is not None else auto_lr(steps)
        threshold_lr = self.threshold_lr if self.threshold_lr is not None else auto_threshold_lr(steps, lr)
        bandwidth = self.bandwidth if self.bandwidth is not None else max(0.001, min(0.02, 6.0 / steps))
        beta2 = self.adam_beta2 if self.adam_beta2 is not None else auto_adam_beta2(steps)
        lr_warmup = min(self.lr_warmup_steps, math.ceil(self.lr_warmup_fraction * steps))
        l0_warmup = min(self.l0_warmup_steps, math.ceil(self.l0_warmup_fraction * steps))
        decay_start = steps - int(self.lr_decay_fraction * steps)
        boost_end = math.ceil(self.threshold_boost_fraction * steps)
        dead = self.dead_window if self.dead_window is not None else max(1, min(10_000_000, self.tokens // 4))
        log_every = self.log_every if self.log_every is not None else max(1, min(100, steps // 20))
        ckpt = self.checkpoint_every if self.checkpoint_every is not None else max(1, min(1000, steps // 4))
        return Schedule(steps, lr, bandwidth, threshold_lr, beta2, lr_warmup, decay_start, l0_warmup, boost_end, dead,
                        log_every, ckpt)

    # --- persistence -----------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field, plus the derived schedule under `_schedule`."""
        data = asdict(self)
        data["_schedule"] = asdict(self.schedule())
        return data

    def save(self, folder: str | os.PathLike) -> Path:
        """Write train_config.json into `folder` atomically."""
        from app.fsio import atomic_write_text

        path = Path(folder) / CONFIG_FILE
        atomic_write_text(path, json.dumps(self.to_json(), indent=2, sort_keys=True))
        return path

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild from `to_json` output (unknown keys such as `_schedule` are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def load(cls, folder: str | os.PathLike) -> TrainConfig:
        """Read train_config.json from a folder."""
        path = Path(folder) / CONFIG_FILE
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot read training config ({e})") from None


class TrainOption(NamedTuple):
    """One documented TrainConfig field as a command-line option."""

    name: str  # the field name
    flag: str  # --name-with-dashes
    type: type  # int, float, str or bool (None-able fields: the non-None type)
    default: Any  # the field default (None: decided at run time, the help says how)
    help: str  # the field's documentation, with the default appended when it is not None


def _base_type(hint: Any) -> type:
    """`int | None` → int; a plain type as is."""
    args = [a for a in getattr(hint, "__args__", ()) if a is not type(None)]
    return args[0] if args else hint


def _shown_default(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def field_help(name: str) -> str:
    """The documentation of TrainConfig field `name` (shared with the job form's descriptions)."""
    return TrainConfig.__dataclass_fields__[name].metadata["help"]


def train_options() -> list[TrainOption]:
    """The `jumpscope train` options generated from TrainConfig's documented fields, in field order."""
    hints = get_type_hints(TrainConfig)
    options = []
    for f in fields(TrainConfig):
        if not f.metadata.get("cli"):
            continue
        required = "(required)" in f.metadata["help"]
        shown = "" if f.default is None or required else f" (default {_shown_default(f.default)})"
        options.append(TrainOption(f.name, "--" + f.name.replace("_", "-"), _base_type(hints[f.name]), f.default,
                                   f.metadata["help"] + shown))
    return options
