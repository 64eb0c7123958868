"""The training loop (SPEC §2): Adam on fp32 master weights, decoder constraint, λ or target-L0 control,
metrics lines, exact-resume checkpoints, and the final native SAE folder.

Entry point: `train(config) -> Path` (the SAE folder). Works single-process or under torchrun.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from tqdm.auto import tqdm

from app.fsio import atomic_write_text
from app.sae import JumpReLUSAE
from app.training.auto import auto_b_dec_lr_factor, auto_l0_correction
from app.training.checkpoint import (
    load_checkpoint,
    load_optimizer_tensors,
    optimizer_tensors,
    restore_rng,
    rng_tensors,
    save_checkpoint,
)
from app.training.config import CONFIG_FILE, TrainConfig
from app.training.data import DataPlan, build_data
from app.training.distributed import DistContext, init_distributed
from app.training.metrics import FVUAccumulator, LatentStats, finite_or_none, fvu_from_moment_sums
from app.training.missing_directions import ResidualPool, pools_at
from app.training.normalisation import input_stats
from app.training.objectives import aux_latents, dead_max_pre, loss_fn, lower_thresholds_, with_dead_aux
from app.training.optim import SHARED_MOMENT, ThresholdAdam
from app.training.resample import resample_collapsed, resample_splits
from app.training.resume import adopt_resumed_auto, check_output
from app.training.schedule import (
    GroupLRs,
    L0Controller,
    TargetCorrection,
    group_lrs,
    quadratic_coefficient,
    step_lrs,
    warmed_lambda,
)
from app.training.step import training_step
from app.training.summary import run_summary

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
INPUT_MEAN = "input_mean"  # --center's μ (raw units) in a training checkpoint
POOL = "collapse_pool"  # --collapse-share's pooled residuals in a training checkpoint


def train(config: TrainConfig) -> Path:
    """Train an SAE as `config` says and return its folder (loadable with `app.sae.load_sae`)."""
    if config.polish_share > 0:  # two parts and a polish between them (app/training/polished.py)
        from app.training.polished import train_polished

        return train_polished(config)
    dist = init_distributed(config.device)
    try:
        return Trainer(config, dist).run()
    finally:
        dist.close()


class Trainer:
    """One training run. Build with a validated config; `run()` does everything and returns the folder."""

    KEPT_IN_OUT: tuple[str, ...] = ()  # entries of --out a fresh run leaves alone (the polish's folder)

    def __init__(self, config: TrainConfig, dist: DistContext, plan: DataPlan | None = None) -> None:
        self.config, self.dist = config, dist
        self._plan = plan  # a sweep passes each run its plan (one LM shared); None: built from the config
        adopt_resumed_auto(config)
        self.sched = config.schedule()
        self.out = Path(config.out)
        self.device = dist.device
        self.use_autocast = self.device.type == "cuda" and config.autocast is not False
        self.last_record: dict = {}  # the latest metrics line
        self.input_mean: torch.Tensor | None = None  # --center's μ (raw units, float32, CPU); None without it
        self.summary: dict | None = None  # the end-of-run summary (rank 0, once the run finished)
        self.t_start = time.time()  # wall time of the summary counts from here (a sweep sets its own start)
        self.config_extra: dict = {}  # more keys for train_config.json (the polish's record)

    # --- set-up ----------------------------------------------------------------------------------------------
    def _prepare(self) -> tuple[DataPlan, Path | None]:
        """All checks that can fail on bad input, in the order cheapest first; nothing is written here."""
        ckpt = check_output(self.config, keep=self.KEPT_IN_OUT)
        plan = self._plan if self._plan is not None else build_data(self.config, self.dist)
        if self.config.d_in is not None and self.config.d_in != plan.d_in:
            raise ValueError(f"--d-in {self.config.d_in} does not match the activations' width {plan.d_in}")
        if ckpt is not None:
            saved_d_in = TrainConfig.load(ckpt).d_in
            if saved_d_in is not None and saved_d_in != plan.d_in:
                raise ValueError(f"--resume: activations have d_in {plan.d_in}, the checkpoint {saved_d_in}")
        return plan, ckpt

    def _build_sae(self, plan: DataPlan) -> JumpReLUSAE:
        c = self.config
        meta = {k: v for k, v in plan.metadata.items() if v is not None}
        meta["trained_with"] = "jumpscope"
        sae = JumpReLUSAE.create(plan.d_in, c.d_sae, threshold=c.threshold_init, seed=c.seed,
                                 bandwidth=self.sched.bandwidth, metadata=meta,
                                 decoder_norm=c.decoder_init_norm if c.decoder == "free" else 1.0,
                                 apply_b_dec_to_input=c.apply_b_dec_to_input)
        if c.threshold_param == "linear":
            sae.use_linear_threshold()
        return sae.to(self.device)

    def _optimizer(self, sae: JumpReLUSAE, lrs: GroupLRs) -> torch.optim.Adam:
        """Adam with three groups: W_enc and W_dec, the biases b_enc and b_dec, and θ (peak LRs from `lrs`); θ's
        with one second moment over all latents when --threshold-step is shared (app/training/optim.py). With
        --b-dec-lr-factor ≠ 1, b_dec leaves the biases' group for a fourth one at its own LR (`_group_lrs`); at 1
        the three groups are those of every checkpoint written before the option, so they resume as they were."""
        c = self.config
        peaks = self._group_lrs(lrs)
        own_b_dec = len(peaks) == 4
        params = [[sae.W_enc, sae.W_dec], [sae.b_enc] if own_b_dec else [sae.b_enc, sae.b_dec],
                  [sae.threshold_parameter]] + ([[sae.b_dec]] if own_b_dec else [])
        groups = [{"params": p, "lr": lr} for p, lr in zip(params, peaks, strict=True)]
        groups[2][SHARED_MOMENT] = c.threshold_step == "shared"
        # fused: one kernel over all parameters; ~8x faster than the per-tensor loop at 768x16384 on CPU.
        return ThresholdAdam(groups, betas=(float(c.adam_beta1), float(self.sched.adam_beta2)), eps=c.adam_eps,
                             fused=True)

    def _group_lrs(self, now: GroupLRs) -> tuple[float, ...]:
        """The LRs of `_optimizer`'s groups, in its order, for `now` (the peaks, or one step's): b_dec's fourth
        group at the biases' LR × --b-dec-lr-factor only when the factor is not 1."""
        factor = self.config.b_dec_lr_factor
        return tuple(now) if factor == 1.0 else (*now, now.biases * factor)

    # --- the loop --------------------------------------------------------------------------------------------
    def run(self) -> Path:
        for _ in self.steps():
            pass
        return self.out

    def steps(self) -> Iterator[int]:
        """The run, one optimiser step per `next()` (yields the steps done); a sweep interleaves several."""
        c, sched, dist = self.config, self.sched, self.dist
        try:
            plan, ckpt = self._prepare()
            failed: Exception | None = None
        except (ValueError, OSError) as e:
            plan, ckpt, failed = None, None, e
        # Every rank passes its checks before rank 0 creates anything (and all fail together otherwise).
        (n_failed,) = dist.all_reduce_floats(1.0 if failed else 0.0)
        if failed is not None:
            raise failed
        if n_failed:
            raise RuntimeError("another rank failed its input checks; see its log")
        assert plan is not None
        torch.manual_seed(c.seed)
        sae = self._build_sae(plan)
        lrs = group_lrs(c, sched, plan.d_in)
        quadratic = c.objective == "quadratic"  # steers L0 through its own penalty: no controller
        controller = L0Controller(c.target_l0, sched.l0_warmup, c.controller_rate) if c.target_l0 and not quadratic \
            else None
        if c.l0_correction is None:  # auto: a resume took the run's rate (adopt_resumed_auto), a new run decides
            c.l0_correction = auto_l0_correction(plan.d_in)
        correction = TargetCorrection(c.target_l0, sched.l0_warmup, c.l0_correction, c.quadratic_side,
                                      c.l0_reward) if quadratic and (c.l0_correction > 0 or c.l0_reward) else None
        def objective_for(target: float | None, reward: float = 0.0):
            return loss_fn(c.objective, target, c.frequency_coefficient, c.tanh_scale, c.pre_act_coefficient,
                           c.quadratic_side, reward)

        objective = objective_for(c.target_l0)
        fixed_lambda = quadratic_coefficient(c, plan.d_in) if quadratic else c.l0_coefficient
        stats = LatentStats(c.d_sae, dead_window=sched.dead_window)
        final_stats = LatentStats(c.d_sae, dead_window=sched.dead_window)  # densities for sparsity.safetensors
        aux_k = c.aux_k or max(1, plan.d_in // 2)  # AuxK's k, d_in / 2 by default
        start = 0
        if ckpt is None:
            self.input_mean, scale = input_stats(plan.buffer.source, c, self.dist)
            sae.input_scale.fill_(scale)
        if c.b_dec_lr_factor is None:  # auto: a resume took the run's factor (adopt_resumed_auto), a new run decides
            if ckpt is not None:
                raise ValueError(f"--resume: cannot tell which --b-dec-lr-factor the run in {self.out} used; pass it")
            c.b_dec_lr_factor = auto_b_dec_lr_factor(plan.d_in, c.apply_b_dec_to_input, self.input_mean is not None)
        opt = self._optimizer(sae, lrs)
        pool = ResidualPool()  # --collapse-share: the residuals the next check reads
        if ckpt is not None:
            start = self._restore(ckpt, sae, opt, plan, controller, stats, final_stats, correction, pool)
        mean = None if self.input_mean is None else self.input_mean.to(self.device)
        # `data_split` records which corpus documents training read; `jumpscope eval` scores the others.
        # `input_centred`: whether the run trained on x − μ (--center true, or auto and the mean large enough).
        extra = ({"d_in": plan.d_in, "input_centred": self.input_mean is not None}
                 | ({"data_split": plan.split} if plan.split else {}) | self.config_extra)
        config_json = json.dumps(self.config.to_json() | extra, indent=2, sort_keys=True)
        if dist.is_main:  # every check passed: now the output folder appears
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out / CONFIG_FILE, config_json)
            self._trim_metrics(start)
        plan.commit(dist.is_main)
        dist.barrier()

        weights = [sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, sae.threshold_parameter]
        interval = _Interval(c.d_sae)
        bar = tqdm(total=sched.total_steps, initial=start, disable=not (c.progress and dist.is_main),
                   desc="train", unit="step", dynamic_ncols=True)
        t0 = time.time()
        for step in range(start, sched.total_steps):
            x = plan.buffer.next_batch().to(self.device, non_blocking=True)
            if mean is not None:  # --center: the SAE trains on x − μ (float32, so fp16 files keep their digits)
                x = x.float() - mean
            now = step_lrs(step, sched, lrs, c.threshold_boost)
            for group, lr in zip(opt.param_groups, self._group_lrs(now), strict=True):
                group["lr"] = lr
            lam = controller.lam if controller else warmed_lambda(step, fixed_lambda, sched.l0_warmup)
            if correction:  # the quadratic penalty pulls toward T_pen, moved so that L0 settles on the target
                objective = objective_for(correction.penalty_target, correction.reward)
            step_loss, dead = objective, None
            # AuxK: to the last step, or (--aux-through-decay false) until the LR decay begins
            if c.aux_coefficient > 0 and (c.aux_through_decay or step < sched.lr_decay_start):
                dead = (stats.since_fired >= c.aux_dead_window).nonzero().squeeze(1).to(self.device)
                trained = aux_latents(sae, dead, c.aux_collapse_share)  # the dead and the collapsed
                interval.aux_collapsed = trained.numel() - dead.numel()
                if trained.numel():
                    step_loss = with_dead_aux(objective, trained, c.aux_coefficient, aux_k)
            out = training_step(sae, opt, x, lam, grad_clip=c.grad_clip, autocast=self._autocast(),
                                average_gradients=lambda: dist.average_gradients(weights), loss_fn=step_loss,
                                unit_decoder=c.decoder == "unit")
            self._after_step(sae)
            if c.aux_threshold_reset and dead is not None and dead.numel():  # every rank lowers θ alike
                lower_thresholds_(sae, dead, dist.all_reduce_max(dead_max_pre(sae, x, dead)))
            splits_now = sched.l0_warmup <= step < sched.lr_decay_start and (step + 1) % c.split_every == 0
            if c.split_jaccard > 0 and splits_now:  # app/training/resample.py
                interval.split += resample_splits(sae, opt, x, out.x_hat.detach(), out.latents.detach(),
                                                  c.split_jaccard, c.seed * 1_000_003 + step, dist)
            if c.collapse_share > 0 and pools_at(step, c.split_every, sched.l0_warmup, sched.lr_decay_start):
                pool.add(x, out.x_hat.detach())
            if c.collapse_share > 0 and splits_now:  # the same cadence, after the splits
                interval.collapsed += resample_collapsed(sae, opt, pool, c.collapse_share, dist)
                pool.clear()
            counts = dist.all_reduce_sum((out.latents.detach() > 0).sum(0, dtype=torch.float32))
            n_global = c.batch_size
            l0_batch = float(counts.sum()) / n_global
            sae.active_fraction = l0_batch / sae.d_sae  # the global batch's: every rank picks the same next path
            stats.update_counts(counts, n_global)
            if step >= sched.lr_decay_start:
                final_stats.update_counts(counts, n_global)
            if controller:
                controller.update(step, l0_batch)
            if correction:
                correction.update(step, l0_batch)
            interval.add(out, x, l0_batch)
            done = step + 1
            bar.update(1)
            if done % sched.log_every == 0 or done == sched.total_steps:
                # Dense latents over the LR decay once it has begun (the tokens sparsity.safetensors is measured
                # on), not since step 0: every run starts dense while the target L0 ramps down.
                dense = final_stats if final_stats.tokens else stats
                record = interval.flush(dist, plan.d_in) | {
                    "step": done, "total_steps": sched.total_steps, "tokens": done * c.batch_size,
                    "dead_fraction": stats.dead_fraction(), "dead_window": sched.dead_window,
                    "dense_fraction": finite_or_none(dense.dense_fraction()), "dense_tokens": dense.tokens,
                    "lambda": lam,
                    "lr": now.weights, "threshold_lr": now.threshold,
                    "l0_target": controller.target_at(step) if controller else None,
                    "penalty_target": correction.penalty_target if correction else None,
                    "l0_reward": correction.reward if correction else None,
                    "elapsed_s": round(time.time() - t0, 3),
                }
                bar.set_postfix(l0=f"{record['l0']:.1f}", fvu=f"{record['fvu'] or float('nan'):.3f}")
                self.last_record = record
                if dist.is_main:
                    self._log_metrics(record)
            pause = c.stop_at_step is not None and done == c.stop_at_step and done < sched.total_steps
            if (sched.checkpoint_every and done % sched.checkpoint_every == 0 and done < sched.total_steps) or pause:
                self._checkpoint(done, sae, opt, plan, controller, stats, final_stats, config_json, correction,
                                 pool)
            if pause:
                bar.close()
                log.info("paused at step %d; continue with --resume", done)
                dist.barrier()
                return
            yield done
        bar.close()
        if dist.is_main:
            self._save_final(sae, final_stats if final_stats.tokens else stats)
            self.summary = run_summary(self, start, time.time() - t0, plan)
        dist.barrier()

    def _after_step(self, sae: JumpReLUSAE) -> None:
        """Called after every optimiser step, before anything reads the weights (a cone keeps rows in place)."""

    def _autocast(self):
        if self.use_autocast:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # --- outputs ---------------------------------------------------------------------------------------------
    def _log_metrics(self, record: dict) -> None:
        with open(self.out / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
        log.debug("step %s: %s", record["step"], record)

    def _trim_metrics(self, step: int) -> None:
        """On resume, drop metrics lines logged after the checkpoint (they will be logged again)."""
        path = self.out / METRICS_FILE
        if not path.exists():
            return
        keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
        atomic_write_text(path, "".join(line + "\n" for line in keep))

    def _save_final(self, sae: JumpReLUSAE, stats: LatentStats) -> None:
        """Native SAE files (normalisation folded) moved into --out next to metrics and checkpoints."""
        sae = sae.float().cpu()
        if self.input_mean is not None:  # trained on x − μ: the saved SAE takes x
            sae.fold_input_mean(self.input_mean)
        sae.fold_decoder_norm()  # a free decoder's row norms move into the encoder side (no-op for unit rows)
        tmp = Path(tempfile.mkdtemp(prefix=".final.", dir=self.out))
        try:
            sae.save(str(tmp / "sae"), sparsity=stats.log10_density().float())
            for name in ("sae_weights.safetensors", "sparsity.safetensors", "cfg.json"):  # cfg.json last
                os.replace(tmp / "sae" / name, self.out / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("saved SAE to %s", self.out)

    def _checkpoint(self, step, sae, opt, plan, controller, stats, final_stats, config_json, correction,
                    pool) -> None:
        if not self.dist.is_main:
            return
        opt_t, opt_meta = optimizer_tensors(opt)
        tensors = {f"sae.{k}": v for k, v in sae.state_dict().items()} | opt_t | rng_tensors()
        tensors |= {f"stats.{k}": v for k, v in stats.state_dict().items()}
        tensors |= {f"final_stats.{k}": v for k, v in final_stats.state_dict().items()}
        tensors |= {f"{POOL}.{k}": v for k, v in pool.tensors().items()}
        if self.input_mean is not None:
            tensors[INPUT_MEAN] = self.input_mean
        state = {"step": step, "tokens": step * self.config.batch_size, "buffer": plan.buffer.state_dict(),
                 "controller": controller.state_dict() if controller else None, "optimizer": opt_meta,
                 "target_correction": correction.state_dict() if correction else None,
                 "active_fraction": sae.active_fraction}  # the next step's path (dense or sparse)
        save_checkpoint(self.out, step, tensors, state, config_json, keep=self.config.keep_checkpoints)

    def _restore(self, ckpt, sae, opt, plan, controller, stats, final_stats, correction, pool) -> int:
        tensors, state = load_checkpoint(ckpt)
        sae.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("sae.")})
        load_optimizer_tensors(opt, tensors, state["optimizer"])
        stats.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("stats.")})
        final_stats.load_state_dict({k[12:]: v for k, v in tensors.items() if k.startswith("final_stats.")})
        pool.load({k[len(POOL) + 1:]: v for k, v in tensors.items() if k.startswith(f"{POOL}.")}, self.device)
        if controller and state.get("controller"):
            controller.load_state_dict(state["controller"])
        if correction and state.get("target_correction"):  # a checkpoint from before the correction: T_pen = T
            correction.load_state_dict(state["target_correction"])
        self.input_mean = tensors.get(INPUT_MEAN)  # --center's μ, exactly as the run began with it
        sae.active_fraction = state.get("active_fraction")  # None before 2026-12-05: the dense path first
        plan.buffer.load_state_dict(state["buffer"])
        restore_rng(tensors)
        log.info("resumed from %s (step %d)", ckpt, state["step"])
        return int(state["step"])


class _Interval:
    """Averages over the steps between two metrics lines (FVU with the interval's global mean)."""

    def __init__(self, d_sae: int) -> None:
        self.reset()

    def reset(self) -> None:
        self.n, self.loss, self.mse, self.l0, self.split, self.collapsed = 0, 0.0, 0.0, 0.0, 0, 0
        self.aux_collapsed = 0  # at the interval's last step: latents AuxK trained as collapsed, not dead
        self.fvu = FVUAccumulator()

    def add(self, out, x: torch.Tensor, l0_batch: float) -> None:
        self.n += 1
        self.loss += float(out.loss.detach())
        self.mse += float(out.mse.detach())
        self.l0 += l0_batch
        self.fvu.update(x.float(), out.x_hat.detach().float())

    def flush(self, dist: DistContext, d: int) -> dict:
        """The interval's averages over every rank; FVU about the mean of the global batches (one all-reduce)."""
        local = torch.cat([torch.tensor([self.loss, self.mse], dtype=torch.float64), self.fvu.moment_sums(d)])
        total = dist.all_reduce_tensor(local)
        n = max(self.n, 1) * dist.world
        rec = {"loss": float(total[0]) / n, "mse": float(total[1]) / n, "l0": self.l0 / max(self.n, 1),
               "fvu": finite_or_none(fvu_from_moment_sums(total[2:])), "split_resampled": self.split,
               "collapse_resampled": self.collapsed, "aux_collapsed": self.aux_collapsed}
        self.reset()
        return rec
