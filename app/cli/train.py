"""`jumpscope train`: train a JumpReLU SAE from an LM + corpus, or from an activation file.

    jumpscope train --model M --hook resid_post --layer L --corpus PATH --d-sae N \\
        (--l0-coefficient λ | --target-l0 K) --tokens T --out DIR [...]
    jumpscope train --activations FILE --d-sae N --target-l0 K --tokens T --out DIR
    (no --l0-coefficient/--target-l0: target L0 min(32, d_sae/8); no --tokens with --activations: one pass)

Sweeps: --hook, --layer, --d-sae, --target-l0 and --l0-coefficient take comma lists
(`--d-sae 1024,4096 --target-l0 16,32 --layer 3,6`); the cross product is trained from one LM pass, each run
in its own folder under --out (named after the values that vary, e.g. L3-resid_post-d1024-l0_16) with its own
train_config.json, metrics, checkpoints and summary.json; --resume continues every run. docs/training_sweeps.md.

Every flag maps to a field of app.training.config.TrainConfig (same name, dashes for underscores).
Bad input fails before any work with one line and exit code 2; under torchrun the same command trains
data-parallel.
"""

from __future__ import annotations

import argparse

from app.cli.common import CLIError


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


# (flag, type, help); defaults come from TrainConfig so there is one source of truth.
_OPTIONS: list[tuple[str, type, str]] = [
    ("--model", str, "HF model folder, .gguf file or hub id to harvest activations from"),
    ("--hook", str, "hook kind: resid_pre | resid_post | attn_out | mlp_out (default resid_post)"),
    ("--layer", int, "block index of the hook"),
    ("--corpus", str, "text/.jsonl/.parquet file or folder, or hf:NAME[:split]"),
    ("--context-size", int, "tokens per context (default: min(1024, model max positions))"),
    ("--lm-batch-size", int, "contexts per LM forward while harvesting (default 8)"),
    ("--lm-dtype", str, "LM dtype (default bf16 on CUDA, float32 on CPU)"),
    ("--activations", str, "safetensors file with `activations` [N, d_in] (instead of --model/--corpus)"),
    ("--activation-cache", str, "folder of harvested activation shards, reused across a sweep"),
    ("--buffer-tokens", int, "mixing-buffer size in tokens (default 262144)"),
    ("--holdout-every", int, "hold every N-th corpus document out of training for `jumpscope eval` "
                             "(default 20; 0: none)"),
    ("--outlier-factor", float, "skip positions whose activation norm exceeds this × the median norm "
                                "(default 10; 0: off), as eval and the index do"),
    ("--d-sae", int, "number of latents (required)"),
    ("--d-in", int, "expected activation width (checked against the data)"),
    ("--threshold-init", float, "θ at init, normalised units (default 0.001)"),
    ("--bandwidth", float, "θ straight-through bandwidth ε (default auto: 0.001 from 6k steps, up to 0.02)"),
    ("--norm-tokens", int, "sample size for the input normalisation (default 65536)"),
    ("--l0-coefficient", float, "λ of loss = mse + λ·L0 (or use --target-l0)"),
    ("--target-l0", float, "target mean L0; λ is adapted by a controller (or use --l0-coefficient)"),
    ("--l0-warmup-steps", int, "λ warm-up / target ramp steps (default 10000, at most 20%% of the run)"),
    ("--l0-warmup-fraction", float, "cap of the L0 warm-up as a fraction of the run (default 0.2)"),
    ("--controller-rate", float, "target-L0 controller gain on log λ per step (default 0.05)"),
    ("--objective", str, "step (Gemma Scope 1, default) | quadratic (Gemma Scope 2) | tanh (Anthropic); "
                         "see docs/training.md"),
    ("--quadratic-coefficient", float, "quadratic: λ of the (2/T)(L0 − T)² penalty (default 0.1)"),
    ("--frequency-coefficient", float, "quadratic: weight of the firing-frequency penalty (default 0)"),
    ("--tanh-scale", float, "tanh: c of tanh(c·f·‖W_dec‖) (default 4)"),
    ("--pre-act-coefficient", float, "tanh: weight of the pre-activation loss (default 3e-6)"),
    ("--tokens", int, "training tokens in total (required)"),
    ("--batch-size", int, "tokens per optimiser step, over all ranks (default 4096)"),
    ("--lr", float, "peak learning rate (default auto: 7e-5 for long runs, up to 1e-2 for short ones)"),
    ("--threshold-lr", float, "peak learning rate of log θ (default auto: max(lr, 10/steps))"),
    ("--lr-warmup-steps", int, "LR warm-up steps (default 1000, at most 5%% of the run)"),
    ("--lr-warmup-fraction", float, "cap of the LR warm-up as a fraction of the run (default 0.05)"),
    ("--lr-decay-fraction", float, "linear decay to 0 over this last fraction (default 0.2)"),
    ("--adam-beta1", float, "Adam β1 (default 0)"),
    ("--adam-beta2", float, "Adam β2 (default 0.999)"),
    ("--adam-eps", float, "Adam ε (default 1e-8)"),
    ("--grad-clip", float, "max gradient norm, 0 = off (default 1.0)"),
    ("--device", str, "cpu | cuda | cuda:N (default: CUDA when present)"),
    ("--autocast", _bool, "bf16 autocast on CUDA (default true on CUDA)"),
    ("--seed", int, "random seed (default 0)"),
    ("--log-every", int, "steps between metrics lines (default min(100, steps/20))"),
    ("--checkpoint-every", int, "steps between checkpoints, 0 = none (default min(1000, steps/4))"),
    ("--keep-checkpoints", int, "checkpoints kept on disk (default 2)"),
    ("--stop-at-step", int, "pause after this step (checkpoint written); continue later with --resume"),
    ("--dead-window", int, "N tokens of 'dead = not active over the last N tokens' (default min(1e7, T/4))"),
]


def _listed(typ: type):
    """argparse type for a sweep axis: one value, or a comma list of values (a list)."""

    def parse(text: str):
        items = [t.strip() for t in text.split(",")]
        if any(not t for t in items):
            raise argparse.ArgumentTypeError(f"empty item in the list {text!r}")
        values = [typ(t) for t in items]
        return values[0] if len(values) == 1 else values

    parse.__name__ = typ.__name__
    return parse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a JumpReLU SAE (from an LM + corpus, or an activation file)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, typ, help_text in _OPTIONS:
        axis = flag[2:].replace("-", "_") in _sweep_axes()
        p.add_argument(flag, type=_listed(typ) if axis else typ, default=None,
                       help=help_text + (" (a comma list sweeps)" if axis else ""))
    p.add_argument("--out", required=True, help="output SAE folder (must not exist unless --resume)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--no-normalize", action="store_true", help="skip the E‖x‖² = 1 input normalisation")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _activation_rows(path: str) -> int:
    """Rows in an activation file, read from its header (the full checks run before training starts)."""
    from safetensors import safe_open

    from app.training.activations import ACTIVATIONS_KEY, inspect_activation_file

    try:
        with safe_open(path, framework="pt") as fh:
            return int(fh.get_slice(ACTIVATIONS_KEY).get_shape()[0])
    except Exception:  # missing, unreadable or wrong key: let the full check say what is wrong
        return inspect_activation_file(path)[0]


def _sweep_axes() -> tuple[str, ...]:
    from app.training.sweep import SWEEP_AXES

    return SWEEP_AXES


def configs_from_args(args: argparse.Namespace) -> list:
    """The TrainConfigs of the command (unset flags keep the config defaults): one without lists, else one per
    run of the sweep (see app.training.sweep)."""
    from app.training.sweep import sweep_configs

    return sweep_configs(_values(args))


def _values(args: argparse.Namespace) -> dict:
    """TrainConfig keyword values from parsed flags (sweep axes may hold lists)."""
    values = {flag[2:].replace("-", "_"): getattr(args, flag[2:].replace("-", "_")) for flag, _, _ in _OPTIONS}
    values = {k: v for k, v in values.items() if v is not None}
    if "d_sae" not in values:
        raise CLIError("--d-sae is required")
    if "tokens" not in values:
        if values.get("activations") is None:
            raise CLIError("--tokens is required when training from a model and corpus")
        values["tokens"] = _activation_rows(values["activations"])  # default: one pass over the file
    return values | {"out": args.out, "resume": args.resume, "normalize": not args.no_normalize,
                      "progress": not args.no_progress}


def run(args: argparse.Namespace) -> int:
    from app.training.sweep import train_sweep
    from app.training.trainer import train

    configs = configs_from_args(args)
    if len(configs) == 1:
        print(train(configs[0]))
        return 0
    for out in train_sweep(configs, args.out):
        print(out)
    return 0
