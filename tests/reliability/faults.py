"""Fault injection shared by the reliability tests: make the n-th call of a function raise."""

from __future__ import annotations


class Boom(Exception):
    """The injected fault."""


def fail_on_call(monkeypatch, target, name: str, n: int) -> None:
    """Make `target.name` raise Boom on its n-th call (1-based); earlier calls go through."""
    real, calls = getattr(target, name), {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise Boom(f"{name} call {n}")
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, wrapper)
