"""Sweeps (issue 12 point 4): several SAEs trained from one LM pass over the corpus.

A sweep is a list of TrainConfigs that differ only along the sweep axes (width, sparsity, objective, hook and
layer). They share one LM and one harvest: every block of contexts runs through the LM once, stopping after
the deepest hook, and each run reads its hook's activations through its own mixing buffer, optimiser, metrics,
checkpoints and output folder (`<out>/<run name>/`, each with its own train_config.json). The runs advance in
lockstep, one optimiser step each in turn, so the harvested block is shared while it is needed.

Each run sees exactly the batches it would see alone: the contexts, block layout, outlier reference norm and
buffer permutations depend only on the shared keys and the run's own hook (tested: a sweep equals its runs
trained one by one). See docs/training_sweeps.md.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.fsio import atomic_write_json
from app.training.summary import format_run_summary

if TYPE_CHECKING:
    from app.training.config import TrainConfig

log = logging.getLogger(__name__)

SWEEP_FILE = "sweep.json"
METRICS_FILE = "metrics.jsonl"  # in the sweep folder: every run's progress (see _Progress)
# What may differ between the runs of a sweep (the CLI takes comma lists for these flags; light to import).
SWEEP_AXES = ("hook", "layer", "d_sae", "target_l0", "l0_coefficient", "objective")
# What decides the activation stream and the step schedule: equal across a sweep (one harvest, lockstep).
SHARED_KEYS = ("model", "corpus", "activations", "context_size", "lm_batch_size", "lm_dtype", "activation_cache",
               "buffer_tokens", "holdout_every", "outlier_factor", "tokens", "batch_size", "seed", "device",
               "resume", "stop_at_step")


def expand(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The cross product of every list-valued sweep axis in `values` (other keys copied); one dict per run."""
    axes = [k for k in SWEEP_AXES if isinstance(values.get(k), list | tuple)]
    for k in axes:
        if not values[k]:
            raise ValueError(f"--{k.replace('_', '-')}: empty list")
        if len(set(values[k])) != len(values[k]):
            raise ValueError(f"--{k.replace('_', '-')}: a value is repeated in {values[k]}")
    runs = []
    for combo in itertools.product(*(values[k] for k in axes)):
        runs.append({**values, **dict(zip(axes, combo, strict=True))})
    return runs


def run_name(run: dict[str, Any], varying: list[str]) -> str:
    """A folder name from the axes that vary, e.g. `L3-resid_post-d1024-l0_16` (safe for a job name)."""
    parts = []
    if "layer" in varying or "hook" in varying:
        parts.append(f"L{run.get('layer')}-{run.get('hook') or 'resid_post'}")
    if "d_sae" in varying:
        parts.append(f"d{run['d_sae']}")
    if "target_l0" in varying:
        parts.append(f"l0_{run['target_l0']:g}")
    if "l0_coefficient" in varying:
        parts.append(f"lambda_{run['l0_coefficient']:g}")
    if "objective" in varying:
        parts.append(str(run["objective"]))
    return "-".join(parts)


def sweep_configs(values: dict[str, Any]) -> list[TrainConfig]:
    """TrainConfigs of a sweep from flag values (lists on sweep axes); `out` is the sweep folder.

    One run (no list, or lists of one value each) gives one config writing straight into `out`, exactly as
    without a sweep; several give `<out>/<run name>` each."""
    from app.training.config import TrainConfig

    runs = expand(values)
    if len(runs) == 1:
        return [TrainConfig(**runs[0])]
    varying = [k for k in SWEEP_AXES if isinstance(values.get(k), list | tuple) and len(values[k]) > 1]
    if values.get("activations") is not None and {"hook", "layer"} & set(varying):
        raise ValueError("--hook/--layer lists need --model/--corpus: an activation file holds one hook")
    out = Path(values["out"])
    return [TrainConfig(**(run | {"out": str(out / run_name(run, varying))})) for run in runs]


def check_shared(configs: list[TrainConfig]) -> None:
    """ValueError unless the runs agree on every key that decides the shared activation stream."""
    first = configs[0]
    for c in configs[1:]:
        for key in SHARED_KEYS:
            if getattr(c, key) != getattr(first, key):
                raise ValueError(f"the runs of a sweep must share {key}: {getattr(first, key)!r} != "
                                 f"{getattr(c, key)!r}")


class _Progress:
    """The sweep folder's metrics.jsonl: a line whenever a run logged new metrics, with every run's progress.

    `step`/`total_steps` are the slowest run's (what a job's progress bar reads, app.jobs.metrics), `runs` maps
    each run's name to its latest metrics (step, total_steps, l0, fvu, dead_fraction, loss).
    """

    KEYS = ("step", "total_steps", "tokens", "l0", "fvu", "dead_fraction", "loss")

    def __init__(self, path: Path, trainers: list[Any]) -> None:
        self.path, self.trainers, self.seen = path, trainers, [None] * len(trainers)

    def write_if_new(self) -> None:
        records = [t.last_record for t in self.trainers]
        if all(r is s for r, s in zip(records, self.seen, strict=True)):
            return
        self.seen = records
        runs = {Path(t.out).name: {k: r.get(k) for k in self.KEYS} | {"total_steps": t.sched.total_steps}
                for t, r in zip(self.trainers, records, strict=True)}
        line = {"step": min(r.get("step") or 0 for r in runs.values()),
                "total_steps": max(t.sched.total_steps for t in self.trainers), "runs": runs}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(line) + "\n")


def train_sweep(configs: list[TrainConfig], out: str | Path) -> list[Path]:
    """Train every config of a sweep from one LM pass; returns the run folders (the sweep folder holds sweep.json)."""
    from tqdm.auto import tqdm

    from app.training.data import build_lm_data
    from app.training.distributed import init_distributed
    from app.training.resume import adopt_resumed_auto, check_output
    from app.training.trainer import Trainer

    if any(c.polish_share > 0 for c in configs):
        raise ValueError("--polish-share does not run in a sweep yet; train each SAE on its own")
    for c in configs:
        adopt_resumed_auto(c)
    check_shared(configs)
    root = Path(out)
    if not configs[0].resume and root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"--out {root} already exists; pick a new folder or pass --resume")
    started = time.time()
    dist = init_distributed(configs[0].device)
    try:
        for c in configs:  # every output checked before the model loads
            check_output(c)
        plans: list[Any] = [None] * len(configs)  # activation files: each run opens its own (cheap)
        if configs[0].activations is None:
            plans = build_lm_data(configs, dist)
        if dist.is_main:
            root.mkdir(parents=True, exist_ok=True)
            atomic_write_json(root / SWEEP_FILE, {"runs": [
                {"name": Path(c.out).name, "out": c.out, **{k: getattr(c, k, None) for k in SWEEP_AXES}}
                for c in configs]})
        show = any(c.progress for c in configs) and dist.is_main
        for c in configs:
            c.progress = False  # one bar for the sweep instead of one per run
        trainers = [Trainer(c, dist, plan) for c, plan in zip(configs, plans, strict=True)]
        for t in trainers:
            t.t_start = started  # each run's wall time includes the shared model load and first harvest
        active = [t.steps() for t in trainers]
        total = sum(t.sched.total_steps for t in trainers)
        progress = _Progress(root / METRICS_FILE, trainers) if dist.is_main else None
        with tqdm(total=total, disable=not show, desc=f"sweep of {len(trainers)}", unit="step") as bar:
            while active:
                for gen in list(active):  # one step of each run in turn: the same block serves them all
                    try:
                        next(gen)
                        bar.update(1)
                    except StopIteration:
                        active.remove(gen)
                if progress is not None:
                    progress.write_if_new()
        summaries = [t.summary for t in trainers if t.summary is not None]
        if summaries and dist.is_main:
            log.info("sweep of %d runs in %s:\n%s", len(trainers), root,
                     "\n".join(format_run_summary(s) for s in summaries))
        return [t.out for t in trainers]
    finally:
        dist.close()
