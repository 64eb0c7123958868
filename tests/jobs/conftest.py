"""Fixtures for job tests: a store, and a runner whose pipeline runs a fake trainer (fast, no torch)."""

from __future__ import annotations

import pytest

from app.jobs.runner import JobRunner
from app.jobs.store import JobStore
from tests.jobs.fakes import fake_pipeline, shutdown_runner


@pytest.fixture
def store(tmp_path):
    s = JobStore(tmp_path / "data" / "jobs" / "jobs.db")
    yield s
    s.close()


@pytest.fixture
def make_runner(store, tmp_path):
    """Factory for runners on the shared store; every runner's live processes are cancelled at teardown."""
    made: list[JobRunner] = []

    def make(**kw) -> JobRunner:
        kw.setdefault("pipeline_fn", fake_pipeline())
        kw.setdefault("term_grace", 2.0)
        r = JobRunner(store, tmp_path / "data", **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        shutdown_runner(r)
