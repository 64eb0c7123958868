"""The command lines a job runs: `jumpscope train` (under torchrun with several GPUs), then `eval`, `index` and,
when the spec names an explainer, `explain`.

Kept apart from the runner so the mapping from a JobSpec to CLI flags lives in one place.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from app.jobs.environment import PROJECT_ROOT, child_env  # noqa: F401  (re-exported)
from app.jobs.spec import JobSpec

SAE_FILES = ("cfg.json", "sae_weights.safetensors")  # present once training wrote the final SAE
DEFAULT_INDEX_TOKENS = 1 << 20  # tokens indexed after training unless the spec says otherwise


@dataclass(frozen=True)
class Step:
    """One process of a job's pipeline."""

    name: str  # "train", "eval", "index" or "explain"
    phase: str  # the job phase shown while it runs: training, evaluating, indexing, explaining
    argv: tuple[str, ...]  # the command line (empty when the step is skipped)
    note: str | None = None  # set when the step is skipped: why (written to the job log)


def jumpscope_cli(python: str | None = None) -> list[str]:
    """`python -m app.cli` with this interpreter (the venv's, so the child sees the same packages)."""
    return [python or sys.executable, "-m", "app.cli"]


def train_step(spec: JobSpec, out_dir: Path, *, resume: bool, python: str | None = None, n_gpus: int = 1,
               device: str | None = None) -> Step:
    """`jumpscope train ... --out DIR [--resume]`; `torchrun --nproc_per_node N` when n_gpus > 1."""
    args = ["train", "--out", str(out_dir), "--d-sae", str(spec.d_sae), "--tokens", str(spec.tokens),
            "--seed", str(spec.seed)]
    if spec.activations is not None:
        args += ["--activations", spec.activations]
    else:
        args += ["--model", str(spec.model), "--corpus", str(spec.corpus), "--hook", spec.hook,
                 "--layer", str(spec.layer)]
        if spec.context_size is not None:
            args += ["--context-size", str(spec.context_size)]
    if spec.l0_coefficient is not None:
        args += ["--l0-coefficient", repr(spec.l0_coefficient)]
    if spec.target_l0 is not None:
        args += ["--target-l0", repr(spec.target_l0)]
    if spec.polish_share > 0:
        args += ["--polish-share", repr(spec.polish_share)]
    if device and device != "auto":
        args += ["--device", device]
    if resume:
        args.append("--resume")
    args = _swept(args, spec)
    py = python or sys.executable
    if n_gpus > 1:
        # torch.distributed.run is torchrun; `-m` runs our CLI module in every worker.
        launcher = [py, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n_gpus}", "-m", "app.cli"]
    else:
        launcher = jumpscope_cli(py)
    return Step("train", "training", tuple(launcher + args))


def _swept(args: list[str], spec: JobSpec) -> list[str]:
    """The train flags with a sweep job's lists as comma lists (`--d-sae 1024,4096`): one run per combination."""
    lists = spec.sweep.lists() if spec.sweep is not None else {}
    for key, values in lists.items():
        flag = "--" + key.replace("_", "-")
        text = ",".join(repr(v) if isinstance(v, float) else str(v) for v in values)
        if flag in args:
            args[args.index(flag) + 1] = text
        else:
            args += [flag, text]
    return args


def sae_folders(spec: JobSpec | dict, out_dir: str | Path) -> list[Path]:
    """The SAE folders a job writes: out_dir itself, or one sub-folder per run of a sweep job (a stored record's
    spec dict is read as a JobSpec only when it has a sweep)."""
    if isinstance(spec, dict):
        if not spec.get("sweep"):
            return [Path(out_dir)]
        spec = JobSpec.model_validate(spec)
    names = spec.run_names()
    return [Path(out_dir) / name for name in names] if names else [Path(out_dir)]


def eval_step(spec: JobSpec, out_dir: Path, *, python: str | None = None, device: str | None = None) -> Step:
    """`jumpscope eval --sae DIR --model M` (writes DIR/eval.json); skipped for activation-file jobs.

    No --corpus: eval reads DIR/train_config.json and scores only the corpus documents training held out."""
    if spec.corpus is None:
        return Step("eval", "evaluating", (), note="evaluation skipped: an activation-file job has no LM or corpus")
    return Step("eval", "evaluating", tuple(jumpscope_cli(python) + ["eval", "--sae", str(out_dir)]
                                             + _lm_args(spec, device, corpus=False)))


def index_step(spec: JobSpec, out_dir: Path, *, python: str | None = None, device: str | None = None) -> Step:
    """`jumpscope index --sae DIR --corpus C --tokens N` (writes DIR/index.db); skipped for activation-file jobs."""
    if spec.corpus is None:
        return Step("index", "indexing", (), note="indexing skipped: an activation-file job has no LM or corpus")
    tokens = spec.index_tokens or min(spec.tokens, DEFAULT_INDEX_TOKENS)
    return Step("index", "indexing", tuple(jumpscope_cli(python) + ["index", "--sae", str(out_dir), "--tokens",
                                                                     str(tokens)] + _lm_args(spec, device)))


def explain_step(spec: JobSpec, out_dir: Path, *, python: str | None = None) -> Step:
    """`jumpscope explain --sae DIR --explainer E` (labels into DIR/index.db; resumes by itself); in the pipeline
    only when the spec names an explainer, and skipped when the job builds no index."""
    if spec.explainer is None:
        return Step("explain", "explaining", (), note="explaining skipped: no explainer configured")
    if spec.corpus is None:
        return Step("explain", "explaining", (), note="explaining skipped: an activation-file job has no index")
    return Step("explain", "explaining", tuple(jumpscope_cli(python) + ["explain", "--sae", str(out_dir),
                                                                         "--explainer", spec.explainer]))


def _lm_args(spec: JobSpec, device: str | None, corpus: bool = True) -> list[str]:
    """Model, corpus (unless `corpus` is False), context size and device flags shared by eval and index."""
    args = ["--model", str(spec.model)] + (["--corpus", str(spec.corpus)] if corpus else [])
    if spec.context_size is not None:
        args += ["--context-size", str(spec.context_size)]
    if device and device != "auto":
        args += ["--device", device]
    return args


def pipeline(spec: JobSpec, out_dir: Path, *, resume: bool, python: str | None = None, n_gpus: int = 1,
             device: str | None = None) -> list[Step]:
    """The steps still to run: train (skipped when a resumed job already has its final SAE), eval, index, explain."""
    steps = []
    folders = sae_folders(spec, out_dir)
    trained = all((d / f).is_file() for d in folders for f in SAE_FILES)
    if not (resume and trained):
        has_ckpt = any((d / "checkpoints").is_dir() and any((d / "checkpoints").iterdir()) for d in folders)
        if spec.polish_share > 0:  # a run with a polish resumes from its polish/ folder (app/training/polished.py)
            from app.training.polished import polish_started

            has_ckpt = has_ckpt or polish_started(out_dir)
        steps.append(train_step(spec, out_dir, resume=resume and has_ckpt, python=python, n_gpus=n_gpus,
                                device=device))
    for folder in folders:  # a sweep job: every SAE is evaluated, indexed (and explained)
        steps.append(eval_step(spec, folder, python=python, device=device))
        steps.append(index_step(spec, folder, python=python, device=device))
        if spec.explainer is not None:
            steps.append(explain_step(spec, folder, python=python))
    return steps
