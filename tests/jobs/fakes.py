"""Test doubles for job tests: a pipeline whose training step is a fast fake trainer, and a hand-ticking helper."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from app.jobs import procs
from app.jobs.commands import Step
from app.jobs.runner import JobRunner

FAKE_TRAIN = Path(__file__).with_name("fake_train.py")


def fake_pipeline(steps: int = 5, sleep: float = 0.05, fail_at: int | None = None, post: str = "ok"):
    """A pipeline_fn: fake train, then eval/index that succeed (post="ok") or exit 2 (post="fail")."""

    def make(spec, out_dir, *, resume, **_):
        argv = [sys.executable, str(FAKE_TRAIN), str(out_dir), str(steps), str(sleep)]
        if resume:
            argv.append("--resume")
        if fail_at is not None:
            argv += ["--fail-at", str(fail_at)]
        code = (
            "import sys; print('jumpscope eval: error: something went wrong'); sys.exit(2)"
            if post == "fail" else "print('ok')"
        )
        trained = (out_dir / "cfg.json").exists() and resume
        train = [] if trained else [Step("train", "training", tuple(argv))]
        return train + [
            Step("eval", "evaluating", (sys.executable, "-c", code)),
            Step("index", "indexing", (sys.executable, "-c", code)),
        ]

    return make


def tick_until(runner: JobRunner, job_id: str, pred, timeout: float = 20.0, interval: float = 0.05):
    """Tick the runner by hand until pred(record) holds; returns the record (fails the test on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        runner.tick()
        rec = runner.get(job_id)
        if pred(rec):
            return rec
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; job is {rec.status}/{rec.phase}: {runner.log_tail(job_id)}")
        time.sleep(interval)


def shutdown_runner(runner: JobRunner) -> None:
    """Stop ticking and kill every job process the runner still watches (test teardown)."""
    runner.stop()
    for act in list(runner._active.values()):
        procs.kill_group(act.pid)
        if act.proc is not None:
            act.proc.wait(5)
    runner._active.clear()
