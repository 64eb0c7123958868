"""`jumpscope train`: train a JumpReLU SAE from an LM + corpus, or from an activation file.

    jumpscope train --model M --hook resid_post --layer L --corpus PATH --d-sae N \\
        (--l0-coefficient λ | --target-l0 K) --tokens T --out DIR [...]
    jumpscope train --activations FILE --d-sae N --target-l0 K --tokens T --out DIR
    (no --l0-coefficient/--target-l0: target L0 min(32, d_sae/8); no --tokens with --activations: one pass)

Sweeps: --hook, --layer, --d-sae, --target-l0 and --l0-coefficient take comma lists
(`--d-sae 1024,4096 --target-l0 16,32 --layer 3,6`); the cross product is trained from one LM pass, each run
in its own folder under --out (named after the values that vary, e.g. L3-resid_post-d1024-l0_16) with its own
train_config.json, metrics, checkpoints and summary.json; --resume continues every run. docs/training_sweeps.md.

Every flag maps to a field of app.training.config.TrainConfig (same name, dashes for underscores); the
options, their types and help texts are generated from its documented fields (`train_options()`).
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


def _option_type(typ: type):
    """argparse type of a TrainConfig field type (booleans read true/false, yes/no, on/off, 1/0)."""
    return _bool if typ is bool else typ


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
    from app.training.options import train_options

    for option in train_options():  # default None: an unset flag keeps TrainConfig's default
        axis = option.name in _sweep_axes()
        typ = _option_type(option.type)
        p.add_argument(option.flag, type=_listed(typ) if axis else typ, default=None,
                       help=option.help.replace("%", "%%") + (" (a comma list sweeps)" if axis else ""))
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
    from app.training.options import train_options

    values = {o.name: getattr(args, o.name) for o in train_options()}
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
