"""Shared bits of the CLI: the error type that becomes one clear line and exit code 2."""

from __future__ import annotations


class CLIError(Exception):
    """Bad input to a CLI command; the message says what to fix."""
