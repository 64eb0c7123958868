"""Faults during training: a checkpoint interrupted mid-write leaves the previous one intact; a training job
SIGKILLed mid-run is marked failed and, resumed, ends with exactly the weights of an uninterrupted run; a
server restarted while a job runs keeps (and adopts) the job record.

The job tests drive the real `jumpscope train --activations` on a tiny synthetic activation file.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import torch

from tests.jobs.fakes import tick_until
from tests.reliability.conftest import ADMIN_TOKEN
from tests.reliability.faults import Boom, fail_on_call

ROOT = Path(__file__).resolve().parents[2]
BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WEIGHTS = ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")




# --- checkpoints ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("where,n", [("save_file", 1), ("fsync_file", 2), ("rename", 1), ("fsync_dir", 1)])
@pytest.mark.parametrize("same_step", [False, True])
def test_interrupted_checkpoint_leaves_the_previous_one_intact(tmp_path, monkeypatch, where, n, same_step):
    from app.training import checkpoint as ckpt

    tensors = {"w": torch.arange(6.0).reshape(2, 3)}
    ckpt.save_checkpoint(tmp_path, 10, tensors, {"step": 10}, "{}", keep=2)
    ckpt.save_checkpoint(tmp_path, 20, {"w": tensors["w"] + 1}, {"step": 20}, "{}", keep=2)
    target = os if where == "rename" else ckpt
    fail_on_call(monkeypatch, target, where, n)
    step = 20 if same_step else 30  # same_step: re-saving a step after a resume replaces it
    with pytest.raises(Boom):
        ckpt.save_checkpoint(tmp_path, step, {"w": tensors["w"] * 100}, {"step": step}, "{}", keep=2)
    monkeypatch.undo()
    latest = ckpt.latest_checkpoint(tmp_path)
    assert latest is not None
    loaded, state = ckpt.load_checkpoint(latest)  # whatever is the latest must be complete and readable
    if where == "fsync_dir":  # failed after the rename: the new checkpoint is complete
        assert state["step"] == step and torch.equal(loaded["w"], tensors["w"] * 100)
    else:
        assert state["step"] in (10, 20)
        assert torch.equal(loaded["w"], tensors["w"] + (state["step"] == 20))
        # The older of the two previous checkpoints is always still there, untouched.
        older, older_state = ckpt.load_checkpoint(ckpt.list_checkpoints(tmp_path)[0])
        assert older_state["step"] == 10 and torch.equal(older["w"], tensors["w"])
    leftovers = [p.name for p in (tmp_path / ckpt.CHECKPOINTS).iterdir() if p.name.startswith(".")]
    assert not leftovers, f"temporary checkpoint folders left behind: {leftovers}"


# --- jobs ----------------------------------------------------------------------------------------------
@pytest.fixture
def acts(tmp_path):
    from safetensors.torch import save_file

    root = tmp_path / "corpora"
    root.mkdir(exist_ok=True)
    path = root / "acts.safetensors"
    save_file({"activations": torch.randn(4096, 16, generator=torch.Generator().manual_seed(0))}, str(path))
    return path


def _weights(folder) -> dict[str, torch.Tensor]:
    from app.sae import load_sae

    sae = load_sae(folder)
    return {k: getattr(sae, k).detach().clone() for k in WEIGHTS}


def _tick_until(runner, job_id, pred, timeout=300.0, interval=0.2):
    """tick_until with the long timeout a real training job needs."""
    return tick_until(runner, job_id, pred, timeout=timeout, interval=interval)


@pytest.fixture
def runner(tmp_path):
    from app.jobs.commands import pipeline
    from app.jobs.runner import JobRunner
    from app.jobs.store import JobStore

    store = JobStore(tmp_path / "data" / "jobs" / "jobs.db")
    r = JobRunner(store, tmp_path / "data", pipeline_fn=pipeline, device="cpu", term_grace=2.0)
    yield r
    r.stop()
    from app.jobs import procs

    for act in list(r._active.values()):
        procs.kill_group(act.pid)
    store.close()


@pytest.mark.slow  # three real training processes (~1-2 min on a busy 2-core box)
@pytest.mark.timeout(900)
def test_sigkilled_job_is_failed_and_resumes_to_the_uninterrupted_result(runner, acts):
    from app.jobs.spec import JobSpec

    # ≈500 steps: still running after the first checkpoint even on a fast, idle machine.
    spec = dict(d_sae=32, tokens=2_000_000, activations=str(acts), seed=3, l0_coefficient=0.01)
    ref = runner.submit(JobSpec(name="uninterrupted", **spec))
    done = _tick_until(runner, ref.id, lambda j: not j.active)
    assert done.status == "succeeded", runner.log_tail(ref.id)

    rec = runner.submit(JobSpec(name="killed", **spec))
    ckpts = Path(rec.out_dir) / "checkpoints"
    _tick_until(runner, rec.id, lambda j: not j.active or (ckpts.is_dir() and any(
        p.name.startswith("step-") for p in ckpts.iterdir())))
    if not runner.get(rec.id).active:
        pytest.skip("training finished before its first checkpoint; nothing to resume")
    os.killpg(runner.get(rec.id).pid, signal.SIGKILL)  # mid-run, possibly mid-checkpoint-write
    failed = _tick_until(runner, rec.id, lambda j: not j.active, timeout=60)
    assert failed.status == "failed", failed
    assert failed.error
    runner.resume(rec.id)
    resumed = _tick_until(runner, rec.id, lambda j: not j.active)
    assert resumed.status == "succeeded", runner.log_tail(rec.id)
    a, b = _weights(done.out_dir), _weights(resumed.out_dir)
    for k in WEIGHTS:
        assert torch.equal(a[k], b[k]), f"{k}: resumed run differs (max |Δ| {(a[k] - b[k]).abs().max():.3g})"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_server_restart_keeps_the_running_job(acts, make_settings, rel_services):
    """Stop the app while a job trains; a new app on the same data dir still has the record and adopts the job."""
    from fastapi.testclient import TestClient

    from app.jobs import procs
    from app.web import create_app

    settings = make_settings(corpus_root=acts.parent)
    spec = {"name": "across-restart", "d_sae": 32, "tokens": 400_000, "activations": "acts.safetensors",
            "model": "org/model", "hook": "resid_post", "layer": 0, "l0_coefficient": 0.01}
    with TestClient(create_app(settings, services=rel_services)) as c1:
        r = c1.post("/api/admin/jobs", json=spec, headers=BEARER)
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        deadline = time.monotonic() + 300
        while (job := c1.get(f"/api/admin/jobs/{job_id}", headers=BEARER).json())["status"] != "running":
            assert job["status"] == "queued" and time.monotonic() < deadline, job
            time.sleep(0.3)
        pid = c1.app.state.job_runner.get(job_id).pid  # for cleanup if the test fails
    try:
        # The first server is gone (its lifespan ended); the training process is not.
        with TestClient(create_app(settings, services=rel_services)) as c2:
            again = c2.get(f"/api/admin/jobs/{job_id}", headers=BEARER)
            assert again.status_code == 200, again.text
            rec = again.json()
            assert rec["name"] == "across-restart" and rec["spec"]["d_sae"] == 32
            assert rec["status"] in ("running", "succeeded"), rec
            assert job_id in [j["id"] for j in c2.get("/api/admin/jobs", headers=BEARER).json()]
            deadline = time.monotonic() + 600
            while (rec := c2.get(f"/api/admin/jobs/{job_id}", headers=BEARER).json())["status"] == "running":
                assert time.monotonic() < deadline, rec
                time.sleep(0.5)
            assert rec["status"] == "succeeded", rec  # adopted and watched to its end by the new server
    finally:
        if pid and procs.group_alive(pid):
            procs.kill_group(pid)
