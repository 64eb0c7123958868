"""TrainConfig's documented fields as command-line options (`jumpscope train`) and form descriptions (the job API).

Each field's help lives once, in its `_doc` in app/training/config.py; this module only reads it.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, NamedTuple, get_type_hints

from app.training.config import TrainConfig


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
