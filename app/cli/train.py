"""`jumpscope train` (not built yet)."""

from __future__ import annotations

import argparse

from app.cli.common import CLIError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="(coming soon)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise CLIError("'train' is not available yet in this build")
