"""`jumpscope serve` (the web app lands with its own issue; until then this says so)."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the web app (no arguments: the embedded demo)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    log.info("JumpScope web app: coming soon (the SAE core, formats and LM adapter are ready)")
    return 0
