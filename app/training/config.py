"""TrainConfig: every knob of SAE training in one validated, documented dataclass (saved as train_config.json).

Defaults follow SPEC §2 (Gemma Scope / "Jumping Ahead") for long runs; a field left None is decided at run time
by the rules in app/training/auto.py (run-length dependent LRs, batch, ε, β2; see `schedule()`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from app.lm.hooks import HOOK_KINDS
from app.training.auto import (
    AUTO_COLLAPSE_SHARE,
    AUTO_SPLIT_JACCARD,
    auto_adam_beta2,
    auto_apply_b_dec_to_input,
    auto_bandwidth,
    auto_l0_reward,
    auto_lr,
    auto_threshold_lr,
    auto_threshold_step,
    default_batch_size,
    default_target_l0,
)

QUADRATIC_SIDES = ("over", "both")  # the tokens the quadratic penalty acts on: above the target only, or all
THRESHOLD_STEPS = ("shared", "per_latent")  # --threshold-step: θ's Adam second moment over all latents, or per latent

CONFIG_FILE = "train_config.json"


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

    Each field's `_doc` text is its documentation and the help of its `jumpscope train` flag
    (`app.training.options.train_options()`; same name with dashes, the default appended when it is not None).
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
    center: bool | None = _doc(None, "subtract the mean of the normalisation sample from every input before the "
                                     "scale (folded into b_enc and b_dec when saving, so the SAE still takes raw "
                                     "activations); default auto: when the mean holds ≥ 3 % of E‖x‖² (docs/"
                                     "training.md, twentieth pass); false: scale only, SPEC §2's recipe")
    apply_b_dec_to_input: bool | None = _doc(None, "encode x − b_dec while training (SAELens's "
                                                   "apply_b_dec_to_input): the encoder reads the input about a "
                                                   "point it learns, the decoder bias; folded into b_enc when "
                                                   "saving, so the saved SAE encodes x itself; default: true for "
                                                   "a linear θ, false for log θ (docs/training.md, twenty-first "
                                                   "pass); false: the encoder reads x, SPEC §2's recipe")
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
    l0_correction: float | None = _doc(None, "quadratic: rate of the integral correction that moves the penalty's "
                                             "target so the batch L0 settles on --target-l0 (after the L0 warm-up; "
                                             "0 = off, Gemma Scope 2 as published; default auto: 0.002 up to d_in "
                                             "64, 0.01 from 256, linear between; docs/training.md, twenty-seventh "
                                             "pass)")
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
    aux_collapse_share: float = _doc(0.0, "AuxK also trains the collapsed latents: those whose gain "
                                          "‖W_enc,i‖·‖W_dec,i‖ is under this share of the median, which fire now "
                                          "and then with tiny codes and so are never dead (0 = off, dead latents "
                                          "only; on planted data 0.33 helps narrow dictionaries and costs many "
                                          "directions per dimension: docs/training.md, thirtieth pass)")
    aux_through_decay: bool = _doc(True, "AuxK (and its θ reset) run to the last step; false: they stop when the LR "
                                         "decay begins (the recipe before 2026-12-05; docs/training.md, "
                                         "fifteenth pass)")
    split_jaccard: float | None = _doc(None, "split latents: every --split-every steps between the L0 warm-up and "
                                             "the LR decay, of each pair of latents that fire on the same tokens of "
                                             "the batch (Jaccard index ≥ this) with correlated codes, the weaker is "
                                             "re-initialised at a poorly reconstructed token (default auto: 0.9; "
                                             "0 = off, the recipe before 2026-12-06; app/training/resample.py, "
                                             "docs/training.md twenty-third pass)")
    split_every: int = _doc(64, "split latents: steps between two checks for pairs (--split-jaccard)")
    collapse_share: float | None = _doc(None, "collapsed latents: at each --split-every check, the latents whose "
                                              "gain ‖W_enc,i‖·‖W_dec,i‖ is under this share of the median move onto "
                                              "the directions the dictionary misses, read off the residuals of the "
                                              "steps before the check (default auto: 0.33; 0 = off, the recipe "
                                              "before 2026-12-07; app/training/missing_directions.py, "
                                              "docs/training.md thirty-second pass)")
    # --- the polish (app/training/polish.py, app/training/polished.py) ------------------------------------------
    polish_share: float = _doc(0.0, "train this share of --tokens, then move the decoder's rows to where sparse "
                                    "coding (matching pursuit) puts them and train the rest of the tokens with each "
                                    "row kept within cos --polish-cone of its polished direction; needs "
                                    "--target-l0 (the pursuit's k) and one process (0 = off; docs/training.md, "
                                    "thirty-seventh pass)")
    polish_cone: float = _doc(0.98, "the polish: the cosine each row keeps to its polished direction after it")
    polish_tokens: int = _doc(1_048_576, "the polish: tokens it codes, read where the first part of the run "
                                         "stopped")
    polish_epochs: int = _doc(2, "the polish: passes over its tokens")
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
    b_dec_lr_factor: float | None = _doc(None, "b_dec's LR is the biases' LR times this (0 freezes b_dec). Below 1 "
                                               "the reference point the encoder reads x − b_dec from moves more "
                                               "slowly (default auto: 64/d_in within [0.25, 1] on a centred run "
                                               "whose encoder reads x − b_dec, else 1; docs/training.md, "
                                               "twenty-fifth pass)")
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
        self._auto_b_dec = self.apply_b_dec_to_input is None  # remembered: --resume follows the resumed run's
        if self._auto_b_dec:
            self.apply_b_dec_to_input = auto_apply_b_dec_to_input(self.threshold_param)
        self._auto_split = self.split_jaccard is None  # the same: --resume follows the resumed run's
        if self._auto_split:
            self.split_jaccard = AUTO_SPLIT_JACCARD
        self._auto_collapse = self.collapse_share is None  # the same
        if self._auto_collapse:
            self.collapse_share = AUTO_COLLAPSE_SHARE
        # the same; the trainer decides an auto --b-dec-lr-factor once it knows d_in and whether the run centres
        self._auto_b_dec_lr = self.b_dec_lr_factor is None
        self._auto_l0_correction = self.l0_correction is None  # the same, by d_in
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
            (math.isfinite(self.split_jaccard) and 0 <= self.split_jaccard <= 1,
             f"--split-jaccard must be in [0, 1], got {self.split_jaccard}"),
            (self.split_every >= 1, f"--split-every must be >= 1, got {self.split_every}"),
            (math.isfinite(self.collapse_share) and 0 <= self.collapse_share < 1,
             f"--collapse-share must be in [0, 1), got {self.collapse_share}"),
            (math.isfinite(self.aux_collapse_share) and 0 <= self.aux_collapse_share < 1,
             f"--aux-collapse-share must be in [0, 1), got {self.aux_collapse_share}"),
            (math.isfinite(self.polish_share) and 0 <= self.polish_share < 1,
             f"--polish-share must be in [0, 1), got {self.polish_share}"),
            (self.polish_share == 0 or self.target_l0 is not None,
             "--polish-share needs --target-l0: it is the number of rows matching pursuit codes each token with"),
            (math.isfinite(self.polish_cone) and 0 < self.polish_cone <= 1,
             f"--polish-cone must be a cosine in (0, 1], got {self.polish_cone}"),
            (self.polish_tokens >= self.batch_size,
             f"--polish-tokens must be at least one batch ({self.batch_size}), got {self.polish_tokens}"),
            (self.polish_epochs >= 1, f"--polish-epochs must be >= 1, got {self.polish_epochs}"),
            (self.b_dec_lr_factor is None
             or (math.isfinite(self.b_dec_lr_factor) and 0 <= self.b_dec_lr_factor <= 100),
             f"--b-dec-lr-factor must be in [0, 100], got {self.b_dec_lr_factor}"),
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
            (self.l0_correction is None or (math.isfinite(self.l0_correction) and 0 <= self.l0_correction <= 1),
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
        bandwidth = self.bandwidth if self.bandwidth is not None else auto_bandwidth(steps)
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
