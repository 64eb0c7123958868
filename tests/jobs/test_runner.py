"""JobRunner against a fake trainer: launch, progress, success, failure, cancel (tree killed), resume,
server restarts (dead process → failed, live process → adopted), and failing post-steps."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from app.jobs import procs
from app.jobs.commands import Step
from app.jobs.runner import JobConflict
from app.jobs.spec import JobSpec
from tests.jobs.fakes import fake_pipeline, tick_until

SPEC = JobSpec(d_sae=8, tokens=100, activations="/unused.safetensors")


def test_job_runs_to_success_and_registers(make_runner):
    seen = []
    r = make_runner(pipeline_fn=fake_pipeline(steps=4, sleep=0.02),
                    on_success=lambda rec, folder: seen.append((rec.id, folder)))
    rec = r.submit(SPEC)
    assert rec.status == "queued" and Path(rec.out_dir).parent == r.saes_dir
    done = tick_until(r, rec.id, lambda j: not j.active)
    assert done.status == "succeeded" and done.phase == "done" and done.progress == 1.0
    assert done.metrics["step"] == 4 and done.metrics["total_steps"] == 4 and done.pid is None
    assert done.attempts == 1 and done.finished_at >= done.started_at
    assert seen == [(rec.id, Path(done.out_dir))]
    log = r.log_tail(rec.id)
    assert "fake train: done" in log and "eval done" in log and "index done" in log
    assert [row["step"] for row in r.metrics_rows(rec.id)] == [1, 2, 3, 4]
    with pytest.raises(JobConflict):
        r.cancel(rec.id)  # already finished
    with pytest.raises(JobConflict):
        r.resume(rec.id)  # succeeded jobs are not resumed
    with pytest.raises(KeyError):
        r.cancel("nope")


def test_progress_is_read_while_running(make_runner):
    r = make_runner(pipeline_fn=fake_pipeline(steps=40, sleep=0.1))
    rec = r.submit(SPEC)
    mid = tick_until(r, rec.id, lambda j: 0 < j.progress < 1)
    assert mid.status == "running" and mid.phase == "training" and mid.pid
    assert mid.metrics["total_steps"] == 40 and mid.progress == pytest.approx(mid.metrics["step"] / 40)
    r.cancel(rec.id)


def test_cancel_kills_the_process_tree(make_runner, tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    # A step that starts a grandchild (like torchrun workers) and ignores nothing: both must die.
    code = (
        "import subprocess, sys, time; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    )
    r = make_runner(pipeline_fn=lambda *a, **k: [Step("train", "training", (sys.executable, "-c", code))])
    rec = r.submit(SPEC)
    tick_until(r, rec.id, lambda j: j.status == "running" and pidfile.exists() and pidfile.read_text())
    leader, grandchild = r.get(rec.id).pid, int(pidfile.read_text())
    assert procs.pid_alive(grandchild)
    assert r.cancel(rec.id).status == "cancelled"
    done = tick_until(r, rec.id, lambda j: j.pid is None and rec.id not in r._active)
    assert done.status == "cancelled"
    deadline = time.monotonic() + 5
    while procs.pid_alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not procs.pid_alive(leader) and not procs.pid_alive(grandchild)
    assert "cancel requested" in r.log_tail(rec.id)
    assert r.cancel(rec.id).status == "cancelled"  # cancelling twice is harmless


def test_sigterm_ignoring_step_is_killed_after_grace(make_runner):
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    r = make_runner(pipeline_fn=lambda *a, **k: [Step("train", "training", (sys.executable, "-u", "-c", code))],
                    term_grace=0.3)
    rec = r.submit(SPEC)
    tick_until(r, rec.id, lambda j: "up" in r.log_tail(j.id))
    pid = r.get(rec.id).pid
    r.cancel(rec.id)
    tick_until(r, rec.id, lambda j: rec.id not in r._active, timeout=10)
    assert not procs.pid_alive(pid)


def test_cancel_queued_job_never_starts(make_runner):
    r = make_runner(pipeline_fn=fake_pipeline(steps=200, sleep=0.05))
    first, second = r.submit(SPEC), r.submit(SPEC)
    tick_until(r, first.id, lambda j: j.status == "running")
    assert r.get(second.id).status == "queued"  # max_running=1
    r.cancel(second.id)
    r.cancel(first.id)
    tick_until(r, first.id, lambda j: first.id not in r._active)
    r.tick()
    assert r.get(second.id).status == "cancelled" and r.get(second.id).attempts == 0


def test_failure_then_resume_from_checkpoint(make_runner):
    r = make_runner(pipeline_fn=fake_pipeline(steps=6, sleep=0.02, fail_at=4))
    rec = r.submit(SPEC)
    failed = tick_until(r, rec.id, lambda j: not j.active)
    assert failed.status == "failed" and "exit code 3" in failed.error
    with pytest.raises(JobConflict):
        r.resume(r.submit(SPEC).id)  # a queued job cannot be resumed
    resumed = r.resume(rec.id)
    assert resumed.status == "queued" and resumed.resume and resumed.error is None
    done = tick_until(r, rec.id, lambda j: not j.active)
    assert done.status == "succeeded" and done.attempts == 2
    assert "start at 3 (resume=True)" in r.log_tail(rec.id)
    assert [row["step"] for row in r.metrics_rows(rec.id)] == [1, 2, 3, 4, 5, 6]


def test_sigkilled_job_is_failed_and_resumes(make_runner):
    r = make_runner(pipeline_fn=fake_pipeline(steps=30, sleep=0.05))
    rec = r.submit(SPEC)
    tick_until(r, rec.id, lambda j: j.metrics.get("step", 0) >= 3)
    os.kill(r.get(rec.id).pid, signal.SIGKILL)
    failed = tick_until(r, rec.id, lambda j: not j.active)
    assert failed.status == "failed" and "signal 9" in failed.error
    r.resume(rec.id)
    done = tick_until(r, rec.id, lambda j: not j.active)
    assert done.status == "succeeded", r.log_tail(rec.id)
    ckpt_step = int(r.log_tail(rec.id).split("start at ")[-1].split(" ")[0])
    assert ckpt_step >= 3


def test_server_restart_fails_dead_and_adopts_live_jobs(make_runner, store):
    r1 = make_runner(pipeline_fn=fake_pipeline(steps=30, sleep=0.05))
    a, b = r1.submit(SPEC), r1.submit(SPEC)
    tick_until(r1, a.id, lambda j: j.metrics.get("step", 0) >= 2)
    r1.stop()  # "server stops"; the job process keeps running (its own session)
    pid = r1.get(a.id).pid
    del r1._active[a.id]  # forget it, as a dead server would
    # Second server: the live job is adopted and finishes; the queued one then runs.
    r2 = make_runner(pipeline_fn=fake_pipeline(steps=30, sleep=0.05))
    r2.start(background=False)
    assert a.id in r2._active and r2.get(a.id).status == "running" and r2.get(a.id).pid == pid
    done = tick_until(r2, a.id, lambda j: not j.active)
    assert done.status == "succeeded"  # exit code unknown: success judged by the SAE files
    tick_until(r2, b.id, lambda j: j.status == "running")
    procs.kill_group(r2.get(b.id).pid)
    r2._active[b.id].proc.wait(5)  # dead (and reaped), as after a crash
    r2._active.clear()
    r2.stop()
    # Third server: b's process is gone → failed, resumable.
    r3 = make_runner()
    r3.start(background=False)
    rec_b = r3.get(b.id)
    assert rec_b.status == "failed" and "died" in rec_b.error
    assert r3.resume(b.id).status == "queued"


def test_post_step_failure_fails_the_job(make_runner):
    def pipe(spec, out_dir, **_):
        out_dir.mkdir(parents=True, exist_ok=True)
        return [Step("train", "training", (sys.executable, "-c", "pass")),
                Step("eval", "evaluating", (sys.executable, "-c", "import sys; print('bad SAE'); sys.exit(1)"))]

    r = make_runner(pipeline_fn=pipe, on_success=lambda *a: pytest.fail("must not register"))
    rec = r.submit(SPEC)
    done = tick_until(r, rec.id, lambda j: not j.active)
    assert done.status == "failed" and done.phase == "evaluating" and "eval failed (exit code 1)" in done.error


def test_registration_error_is_a_note(make_runner):
    def boom(rec, folder):
        raise ValueError("cannot load")

    r = make_runner(pipeline_fn=fake_pipeline(steps=2, sleep=0.01), on_success=boom)
    rec = r.submit(SPEC)
    done = tick_until(r, rec.id, lambda j: not j.active)
    assert done.status == "succeeded" and "cannot load" in done.error


def test_unstartable_command_fails_cleanly(make_runner, tmp_path):
    r = make_runner(pipeline_fn=lambda *a, **k: [Step("train", "training", (str(tmp_path / "nope"),))])
    rec = r.submit(SPEC)
    done = tick_until(r, rec.id, lambda j: not j.active)
    assert done.status == "failed" and "could not start train" in done.error


def test_name_conflicts(make_runner):
    r = make_runner()
    r.submit(SPEC.model_copy(update={"name": "mine"}))
    with pytest.raises(JobConflict):
        r.submit(SPEC.model_copy(update={"name": "mine"}))
    (r.saes_dir / "existing").mkdir()
    with pytest.raises(JobConflict):
        r.submit(SPEC.model_copy(update={"name": "existing"}))


def test_background_thread_drives_jobs(make_runner):
    r = make_runner(pipeline_fn=fake_pipeline(steps=3, sleep=0.01), poll_interval=0.05)
    r.start()
    rec = r.submit(SPEC)
    deadline = time.monotonic() + 20
    while r.get(rec.id).active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert r.get(rec.id).status == "succeeded"
    assert json.loads((Path(rec.out_dir) / "cfg.json").read_text()) == {}


def test_skipped_steps_are_noted(make_runner):
    def pipe(spec, out_dir, **kw):
        return fake_pipeline(steps=2, sleep=0.01)(spec, out_dir, **kw)[:1] + [
            Step("eval", "evaluating", (), note="evaluation skipped: no corpus"),
            Step("index", "indexing", (), note="indexing skipped: no corpus"),
        ]

    r = make_runner(pipeline_fn=pipe)
    rec = r.submit(SPEC)
    done = tick_until(r, rec.id, lambda j: not j.active)
    assert done.status == "succeeded"
    log = r.log_tail(rec.id)
    assert "note: evaluation skipped: no corpus" in log and "note: indexing skipped: no corpus" in log


def test_unreadable_stored_spec_fails_the_job(make_runner, store, tmp_path):
    r = make_runner()
    rec = store.create("old", {"d_sae": 8, "from_a_future_version": True}, tmp_path / "o", tmp_path / "o.log")
    r.tick()
    got = r.get(rec.id)
    assert got.status == "failed" and "unreadable job spec" in got.error


def test_a_failing_eval_step_fails_the_job(make_runner):
    r = make_runner(pipeline_fn=fake_pipeline(steps=2, sleep=0.01, post="fail"))
    rec = r.submit(SPEC)
    done = tick_until(r, rec.id, lambda j: not j.active)
    assert done.status == "failed" and "eval failed" in done.error
    assert "something went wrong" in r.log_tail(rec.id)
