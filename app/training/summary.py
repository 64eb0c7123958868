"""The end-of-run summary (issue 12 point 6): L0, FVU, dead latents, time and throughput on one screen.

Written as `summary.json` into the run's output folder (atomically) and logged as a few lines. The numbers
are training's own: L0 and FVU are the averages over the last metrics interval (the same as the last line of
metrics.jsonl), dead latents are those never active over the last `dead_window` training tokens, dense latents
those active on more than `DENSE_DENSITY` of the LR decay's tokens (`dense_tokens`). When the run
read an LM corpus with held-out documents, `held_out` adds L0, FVU and dead latents of the saved SAE on those
documents (app.training.quickeval; the numbers `jumpscope eval --tokens 4096` reports for the same contexts).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from app.fsio import atomic_write_json
from app.training.metrics import DENSE_DENSITY

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
L0_TOLERANCE = 0.10  # a run whose L0 ends further than this from its target (as a fraction) is flagged (issue 12)


def run_summary(trainer: Any, start_step: int, train_seconds: float, plan: Any) -> dict[str, Any]:
    """Build, save (summary.json in the run's folder) and log the summary of a finished run; returns it."""
    c, sched, rec = trainer.config, trainer.sched, trainer.last_record
    steps_run = sched.total_steps - start_step
    harvester = getattr(plan, "harvester", None)
    summary: dict[str, Any] = {
        "out": str(trainer.out),
        "hook_name": plan.metadata.get("hook_name"),
        "d_sae": c.d_sae,
        "target_l0": c.target_l0,
        "l0_coefficient": c.l0_coefficient,
        "steps": sched.total_steps,
        "batch_size": c.batch_size,
        "tokens": sched.total_steps * c.batch_size,
        "resumed_at_step": start_step or None,
        "l0": rec.get("l0"),
        "l0_ratio": l0_ratio(rec.get("l0"), c.target_l0),
        "fvu": rec.get("fvu"),
        "loss": rec.get("loss"),
        "dead_fraction": rec.get("dead_fraction"),
        "dead_window": rec.get("dead_window"),
        "dense_fraction": rec.get("dense_fraction"),
        "dense_tokens": rec.get("dense_tokens"),  # the tokens it was measured over: the LR decay's, once begun
        "train_seconds": round(train_seconds, 3),
        "wall_seconds": round(time.time() - getattr(trainer, "t_start", time.time() - train_seconds), 3),
        "tokens_per_s": steps_run * c.batch_size / train_seconds if train_seconds > 0 else None,
        # LM time of the harvest that fed this run (shared by every run of a sweep, not split between them)
        "lm_seconds": round(harvester.lm_seconds, 3) if harvester is not None else None,
        "held_out": None,
    }
    if harvester is not None and c.corpus is not None:
        from app.training.quickeval import held_out_check

        corpus = (plan.split or {}).get("corpus") or c.corpus
        summary["held_out"] = held_out_check(harvester.lm, trainer.out, corpus, c.holdout_every,
                                             int(plan.metadata["context_size"]), batch_size=c.lm_batch_size)
    save_summary(trainer.out, summary)
    log.info("run summary (%s):\n%s", Path(trainer.out) / SUMMARY_FILE, format_run_summary(summary))
    warning = off_target_warning(summary)
    if warning:
        log.warning("%s", warning)
    return summary


def l0_ratio(l0: float | None, target: float | None) -> float | None:
    """The run's L0 ÷ its target L0 (None without a target, as with a fixed λ, or without an L0)."""
    return None if l0 is None or not target else l0 / target


def off_target_warning(summary: dict[str, Any]) -> str | None:
    """One line when the run's L0 ended outside ±L0_TOLERANCE of its target, with what moves it; None otherwise."""
    ratio = summary.get("l0_ratio")
    if ratio is None or abs(ratio - 1.0) <= L0_TOLERANCE:
        return None
    side = "under" if ratio < 1 else "over"
    reward = "; `--l0-reward 0.05` lifts an L0 that the reconstruction holds under it" if side == "under" else ""
    return (f"L0 ended {side} its target: {summary['l0']:.2f} for {summary['target_l0']:g} ({ratio:.3f}×, outside "
            f"±{L0_TOLERANCE:.0%}). On an LM run `jumpscope dial --sae {summary['out']} --target-l0 "
            f"{summary['target_l0']:g} --save DIR` writes a copy with every θ scaled to the target{reward} "
            "(docs/training.md)")


def save_summary(folder: str | Path, summary: dict[str, Any]) -> Path:
    """Write summary.json into `folder` atomically."""
    return atomic_write_json(Path(folder) / SUMMARY_FILE, summary)


def _num(value: Any, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def format_run_summary(s: dict[str, Any]) -> str:
    """The one-screen text of a summary (a few lines)."""
    sparsity = f"target L0 {s['target_l0']:g}" if s.get("target_l0") else f"λ {_num(s.get('l0_coefficient'), 'g')}"
    lines = [
        f"{s['out']}: {s.get('hook_name') or 'activation file'}, d_sae {s['d_sae']}, {sparsity}",
        f"  trained {s['steps']} steps"
        + (f" of {s['batch_size']} tokens" if s.get("batch_size") else "") + f", {s['tokens']} tokens"
        + (f" (resumed at step {s['resumed_at_step']})" if s.get("resumed_at_step") else ""),
        f"  L0 {_num(s.get('l0'), '.2f')}"
        + (f" ({s['l0_ratio']:.3f}× the target)" if s.get("l0_ratio") is not None else "")
        + f"   FVU {_num(s.get('fvu'), '.4f')}   dead "
        f"{_num(s.get('dead_fraction'), '.2%')} (never active over the last {s.get('dead_window')} tokens)   "
        f"dense {_num(s.get('dense_fraction'), '.2%')}"
        + (f" (active on > {DENSE_DENSITY:.0%} of the last {s['dense_tokens']} tokens)" if s.get("dense_tokens")
           else ""),
        f"  time {_num(s.get('wall_seconds'), '.1f')} s (training {_num(s.get('train_seconds'), '.1f')} s, "
        f"LM {_num(s.get('lm_seconds'), '.1f')} s)   {_num(s.get('tokens_per_s'), ',.0f')} tokens/s",
    ]
    held = s.get("held_out")
    if held:
        lines.append(f"  held out: L0 {_num(held.get('l0'), '.2f')}   FVU {_num(held.get('fvu'), '.4f')}   dead "
                     f"{_num(held.get('dead_fraction'), '.2%')} (never active over {held.get('tokens')} tokens)")
    return "\n".join(lines)
