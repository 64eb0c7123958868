"""A run with a polish (--polish-share > 0; app/training/polish.py, docs/training.md thirty-seventh pass).

1. The first part: the recipe as configured, on the first --polish-share of --tokens, an ordinary run of its own.
2. The polish: its decoder's rows move to where matching pursuit puts them (`polish_rows`, k = --target-l0), on the
   --polish-tokens that follow the first part in the activation stream, about the first SAE's b_dec.
3. The second part: the rest of the tokens, from the polished rows (W_enc = W_decᵀ, as at init), each row put back
   within cos --polish-cone of its polished direction after every step (`into_cone`); the split and collapse checks,
   which rewrite rows, are off. Its schedule (warm-ups, LR decay) spans its own tokens.

Both parts read one activation stream (one LM pass): the second goes on where the first stopped (the polish's tokens
are the first it trains on). In --out:

    polish/train_config.json  the whole run's config, as given
    polish/first/             the first part's run folder (its own config, checkpoints, metrics and SAE)
    polish/state.json         the stream position where the first part finished
    polish/rows.safetensors   the polished rows [d_sae, d_in] (unit)
    ...                       the second part: the run's SAE, metrics, checkpoints and summary, as any run

Each stage is done once. --resume skips the stages on disk and resumes the part it stopped in from that part's
checkpoints, so the result equals the uninterrupted run's. One process only (no torchrun) and no sweeps, for now.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from app.fsio import atomic_write_json
from app.sae import JumpReLUSAE, load_sae
from app.training.checkpoint import CHECKPOINTS, latest_checkpoint
from app.training.config import CONFIG_FILE, TrainConfig
from app.training.data import DataPlan, build_data
from app.training.distributed import init_distributed
from app.training.polish import into_cone, polish_rows, screen_for
from app.training.resume import RESUME_KEYS, check_output
from app.training.trainer import METRICS_FILE, Trainer

log = logging.getLogger(__name__)

POLISH_DIR = "polish"
FIRST_DIR = "first"
STATE_FILE = "state.json"
ROWS_FILE = "rows.safetensors"
ROWS_KEY = "rows"
POLISH_KEYS = ("polish_share", "polish_cone", "polish_tokens", "polish_epochs")  # must match on --resume


def part_configs(config: TrainConfig) -> tuple[TrainConfig, TrainConfig]:
    """The two parts' configs: the first share of the tokens (its folder inside polish/), and the rest without row
    rewrites. --stop-at-step counts the whole run's steps; each part gets its own share of it."""
    batch = config.batch_size
    first = int(config.polish_share * config.tokens) // batch * batch
    rest = (config.tokens - first) // batch * batch
    if first < batch or rest < batch:
        raise ValueError(f"--polish-share {config.polish_share} splits --tokens {config.tokens} into {first} and "
                         f"{rest} tokens; each part needs at least one batch of {batch}")
    steps = first // batch
    stop = config.stop_at_step
    first_stop = stop if stop is not None and stop < steps else None
    rest_stop = stop - steps if stop is not None and stop > steps else None
    common = {"polish_share": 0.0, "resume": False}  # each part decides its own resume (`_resumable`)
    one = replace(config, tokens=first, out=str(Path(config.out) / POLISH_DIR / FIRST_DIR), stop_at_step=first_stop,
                  **common)
    two = replace(config, tokens=rest, stop_at_step=rest_stop, split_jaccard=0.0, collapse_share=0.0, **common)
    return one, two


class ConeTrainer(Trainer):
    """The second part: the decoder starts at `rows` (unit, scaled to the recipe's init norm) and every row goes
    back within cos `cone` of its row of `rows` after each step (before metrics and checkpoints read it)."""

    KEPT_IN_OUT = (POLISH_DIR,)

    def __init__(self, config: TrainConfig, dist, plan: DataPlan, rows: torch.Tensor, cone: float,
                 record: dict) -> None:
        super().__init__(config, dist, plan)
        self.rows, self.cone = rows, cone
        self.config_extra = {"polish": record}
        self._centre: torch.Tensor | None = None

    def _build_sae(self, plan: DataPlan) -> JumpReLUSAE:
        sae = super()._build_sae(plan)
        if tuple(self.rows.shape) != tuple(sae.W_dec.shape):
            raise ValueError(f"{POLISH_DIR}/{ROWS_FILE} holds rows {tuple(self.rows.shape)}, the SAE needs "
                             f"{tuple(sae.W_dec.shape)}")
        self._centre = torch.nn.functional.normalize(self.rows.to(sae.W_dec), dim=1)
        with torch.no_grad():
            sae.W_dec.copy_(self._centre * sae.W_dec.norm(dim=1, keepdim=True))
            sae.W_enc.copy_(sae.W_dec.T)
        return sae

    def _after_step(self, sae: JumpReLUSAE) -> None:
        assert self._centre is not None
        into_cone(sae.W_dec, self._centre, self.cone)


def train_polished(config: TrainConfig) -> Path:
    """Train a run with a polish (module docstring); returns --out, which holds the second part's SAE."""
    out, folder = Path(config.out), Path(config.out) / POLISH_DIR
    first, second = part_configs(config)
    _check_whole(config, folder)
    dist = init_distributed(config.device)
    try:
        if dist.world > 1:
            raise ValueError("--polish-share runs in one process for now; start it without torchrun")
        plan = build_data(config, dist)  # the whole run's stream: both parts read it
        if config.d_in is not None and config.d_in != plan.d_in:  # before anything is written, as a plain run
            raise ValueError(f"--d-in {config.d_in} does not match the activations' width {plan.d_in}")
        if dist.is_main:
            folder.mkdir(parents=True, exist_ok=True)
            if not polish_started(out):
                config.save(folder)  # the whole run's config, as given
        state_path, rows_path = folder / STATE_FILE, folder / ROWS_FILE
        if not state_path.exists():
            first.resume = _resumable(Path(first.out), config.resume, whole_folder=True)
            trainer = Trainer(first, dist, plan)
            trainer.run()
            if trainer.summary is None:  # --stop-at-step paused it
                return out
            atomic_write_json(state_path, {"buffer": plan.buffer.state_dict()})
        if config.stop_at_step is not None and config.stop_at_step <= first.tokens // first.batch_size:
            return out
        state = json.loads(state_path.read_text())
        if not rows_path.exists():
            _write_rows(rows_path, _polish(config, Path(first.out), plan, state, dist.device))
        rows = load_file(str(rows_path))[ROWS_KEY]
        second.resume = _resumable(out, config.resume, whole_folder=False)
        if not second.resume:
            plan.buffer.load_state_dict(state["buffer"])
        record = {k: getattr(config, k) for k in POLISH_KEYS} | {
            "tokens": config.tokens, "first_tokens": first.tokens, "first": f"{POLISH_DIR}/{FIRST_DIR}"}
        ConeTrainer(second, dist, plan, rows, config.polish_cone, record).run()
        return out
    finally:
        dist.close()


def polish_started(out: str | os.PathLike) -> bool:
    """Whether --out holds a run with a polish that began (so --resume can continue it)."""
    return (Path(out) / POLISH_DIR / CONFIG_FILE).is_file()


def _check_whole(config: TrainConfig, folder: Path) -> None:
    """A fresh run needs --out new or empty; --resume needs this run's polish folder, with the same settings."""
    if not config.resume:
        check_output(config)
        return
    try:
        saved = json.loads((folder / CONFIG_FILE).read_text()) if polish_started(config.out) else None
    except (OSError, ValueError):
        saved = None
    if saved is None:
        raise FileNotFoundError(f"--resume: {folder / CONFIG_FILE} is missing or unreadable; {config.out} holds no "
                                "run with a polish to resume")
    for key in (*RESUME_KEYS, *POLISH_KEYS):
        if key in saved and saved[key] != getattr(config, key) and saved[key] is not None:
            raise ValueError(f"--resume: {key} is {getattr(config, key)!r} but the run in {config.out} used "
                             f"{saved[key]!r}")


def _resumable(out: Path, resume: bool, whole_folder: bool) -> bool:
    """Whether a part resumes from its checkpoints. A part that began but wrote none starts again: what it wrote is
    removed (the whole folder for the first part, which is the run's own; its config, metrics and empty checkpoints
    folder for the second, whose folder is --out)."""
    if latest_checkpoint(out) is not None:
        return resume
    if whole_folder:
        shutil.rmtree(out, ignore_errors=True)
    else:
        for name in (CONFIG_FILE, METRICS_FILE):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    return False


@torch.no_grad()
def _polish(config: TrainConfig, first_out: Path, plan: DataPlan, state: dict, device: torch.device) -> torch.Tensor:
    """The first SAE's rows polished on the --polish-tokens after the first part (raw units, less its b_dec)."""
    sae = load_sae(first_out, device=str(device))
    plan.buffer.load_state_dict(state["buffer"])
    batches, n = [], 0
    while n < config.polish_tokens:
        batches.append(plan.buffer.next_batch())
        n += batches[-1].shape[0]
    x = torch.cat(batches)[:config.polish_tokens].to(device, torch.float32) - sae.b_dec.float()
    k = min(max(1, round(float(config.target_l0))), config.d_sae)
    log.info("polishing %d rows on %d tokens (k %d, %d passes)", config.d_sae, x.shape[0], k, config.polish_epochs)
    return polish_rows(sae.W_dec.float(), x, k, config.polish_epochs, config.batch_size, config.seed,
                       screen=screen_for(config.d_sae, k), progress=config.progress).cpu()


def _write_rows(path: Path, rows: torch.Tensor) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({ROWS_KEY: rows.contiguous()}, str(tmp))
    os.replace(tmp, path)
