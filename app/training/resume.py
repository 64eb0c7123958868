"""--resume: which settings must match the run being resumed, and which auto settings take that run's values.

`check_output` validates --out/--resume before any work; `adopt_resumed_auto` makes the auto fields (decided at run
time, app/training/auto.py) follow the resumed run so its schedule, data stream and optimiser groups stay as they were.
"""

from __future__ import annotations

import json
from pathlib import Path

from app.training.checkpoint import latest_checkpoint
from app.training.config import CONFIG_FILE, TrainConfig

# Fields that must match between a run and its --resume (the rest, e.g. logging cadence, may change).
RESUME_KEYS = ("model", "hook", "layer", "corpus", "context_size", "activations", "d_sae", "tokens",
               "batch_size", "l0_coefficient", "target_l0", "seed", "lr", "threshold_lr", "buffer_tokens",
               "bandwidth", "threshold_init", "normalize", "holdout_every", "objective", "threshold_param", "decoder",
               "decoder_init_norm", "quadratic_coefficient", "aux_coefficient", "aux_k", "aux_dead_window",
               "threshold_step", "aux_through_decay", "threshold_boost", "threshold_boost_fraction", "center",
               "apply_b_dec_to_input", "b_dec_lr_factor", "split_jaccard", "split_every", "collapse_share",
               "aux_collapse_share")
# A key missing from an older run's config: what it meant then.
RESUME_LEGACY = {"holdout_every": 0, "objective": "step", "threshold_param": "log", "decoder": "unit",
                 "decoder_init_norm": 0.1, "quadratic_coefficient": 0.1, "aux_coefficient": 0.0, "aux_k": None,
                 "aux_dead_window": 65_536, "threshold_step": "per_latent",
                 "aux_through_decay": False, "threshold_boost": 1.0, "threshold_boost_fraction": 0.1,
                 "center": False, "apply_b_dec_to_input": False, "b_dec_lr_factor": 1.0,
                 "split_jaccard": 0.0, "split_every": 64, "l0_correction": 0.0,
                 "collapse_share": 0.0, "aux_collapse_share": 0.0}


# An auto field → the flag TrainConfig sets when the field was left to decide by itself (app/training/config.py).
AUTO_FLAGS = {"batch_size": "_auto_batch", "apply_b_dec_to_input": "_auto_b_dec", "split_jaccard": "_auto_split",
              "b_dec_lr_factor": "_auto_b_dec_lr", "l0_correction": "_auto_l0_correction",
              "collapse_share": "_auto_collapse"}
AUTO_NUMBERS = ("split_jaccard", "b_dec_lr_factor", "l0_correction", "collapse_share")  # taken as the run's float


def adopt_resumed_auto(config: TrainConfig) -> None:
    """On --resume, values the config chose by itself take those of the run being resumed: an auto --batch-size
    its batch (runs started before the auto rule used 4096), so the schedule and the data stream stay that run's,
    an auto --apply-b-dec-to-input its choice (runs started before 2026-12-05 encoded x), an auto
    --split-jaccard its value (0 before 2026-12-06), an auto --b-dec-lr-factor its factor (1 for runs started
    before the auto rule), an auto --l0-correction its rate (0.002 for runs started before the auto rule, 0
    before the correction) and an auto --collapse-share its share (0 before 2026-12-07; RESUME_LEGACY names what a
    missing key meant). Call before anything reads them; the
    first call decides (a sweep's runs are adopted before their Trainers are built)."""
    auto = {key for key, flag in AUTO_FLAGS.items() if getattr(config, flag, False)}
    if not (config.resume and auto):
        return
    for flag in AUTO_FLAGS.values():
        setattr(config, flag, False)
    ckpt = latest_checkpoint(Path(config.out))
    if ckpt is None:
        return  # check_output says so
    try:
        saved = json.loads((ckpt / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return
    if "batch_size" in auto and isinstance(was := saved.get("batch_size"), int) and was > 0:
        config.batch_size = was
    if "apply_b_dec_to_input" in auto:
        config.apply_b_dec_to_input = saved.get("apply_b_dec_to_input", RESUME_LEGACY["apply_b_dec_to_input"]) is True
    for key in AUTO_NUMBERS:
        if key in auto and isinstance(was := saved.get(key, RESUME_LEGACY[key]), (int, float)):
            setattr(config, key, float(was))


def check_output(config: TrainConfig, keep: tuple[str, ...] = ()) -> Path | None:
    """Validate --out/--resume before any work; returns the checkpoint to resume from (or None). A fresh run needs
    --out new or empty but for the entries named in `keep`."""
    out = Path(config.out)
    if config.resume:
        ckpt = latest_checkpoint(out)
        if ckpt is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {out}/checkpoints to resume from")
        saved = json.loads((ckpt / CONFIG_FILE).read_text())
        for key in RESUME_KEYS:
            if key == "holdout_every" and config.corpus is None:
                continue  # the document split only concerns corpus runs
            if key == "b_dec_lr_factor" and config.b_dec_lr_factor is None:
                continue  # auto, not yet adopted: adopt_resumed_auto follows the run's
            was = saved.get(key, RESUME_LEGACY.get(key))
            if was != getattr(config, key):
                raise ValueError(f"--resume: {key} is {getattr(config, key)!r} but the run in {out} used {was!r}")
        return ckpt
    if out.exists() and (not out.is_dir() or any(p.name not in keep for p in out.iterdir())):
        raise FileExistsError(f"--out {out} already exists; pick a new folder or pass --resume")
    return None
