"""The `jumpscope` command line: serve, train, index, eval, demo.

Each sub-command lives in its own module with a `register(subparsers)` function; heavy imports happen
inside the handlers so `jumpscope --help` is instant and only `serve` imports the web stack.
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys

from app.cli import demo, dial, explain, index, serve, train
from app.cli import eval as eval_cmd
from app.cli.common import CLIError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jumpscope", description="Train, explore and validate JumpReLU SAEs.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (serve, train, index, explain, eval_cmd, demo, dial):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `jumpscope` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except (CLIError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as e:
        # One line that says what to fix; no traceback for bad input.
        print(f"jumpscope {args.command}: error: {e}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as e:  # a damaged index.db or jobs.db
        print(f"jumpscope {args.command}: error: database unreadable ({e}); restore it from a backup or "
              "delete it to rebuild", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"jumpscope {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
