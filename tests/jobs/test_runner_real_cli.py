"""The runner driving the real `jumpscope train --activations` on a tiny synthetic activation file: a job runs
to success and leaves a loadable SAE; SIGKILL mid-run → failed → resume from the checkpoint → success.

Skipped until the trainer's CLI (`jumpscope train --activations ...`) is in the build."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from app.jobs.spec import JobSpec
from tests.jobs.fakes import tick_until


@pytest.fixture
def acts(tmp_path):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "acts.safetensors"
    save_file({"activations": torch.randn(4096, 16, generator=torch.Generator().manual_seed(0))}, str(path))
    return path


def test_real_training_job_succeeds(make_runner, acts):
    from app.jobs.commands import pipeline
    from app.sae import load_sae

    r = make_runner(pipeline_fn=pipeline, device="cpu")
    rec = r.submit(JobSpec(d_sae=32, tokens=4096, activations=str(acts), name="real", model="org/model",
                           hook="mlp_out", layer=1))
    done = tick_until(r, rec.id, lambda j: not j.active, timeout=240, interval=0.2)
    assert done.status == "succeeded", r.log_tail(rec.id)
    assert done.progress == 1.0 and done.metrics.get("total_steps")
    rows = r.metrics_rows(rec.id)
    assert rows and {"step", "loss", "l0"} <= set(rows[-1])
    sae = load_sae(done.out_dir)
    assert sae.d_in == 16 and sae.d_sae == 32
    # The spec's LM and hook reach cfg.json (train --activations alone records hook_name null: never servable).
    assert sae.cfg.metadata["hook_name"] == "blocks.1.hook_mlp_out" and sae.cfg.metadata["model_name"] == "org/model"
    assert "evaluation skipped" in r.log_tail(rec.id)


def test_real_job_killed_then_resumed(make_runner, acts):
    from app.jobs.commands import pipeline

    r = make_runner(pipeline_fn=pipeline, device="cpu")
    # Long enough (2,000 steps of the auto batch, 256) that the job is still running after its first checkpoint.
    rec = r.submit(JobSpec(d_sae=32, tokens=512_000, activations=str(acts), name="resumable"))
    ckpts = Path(rec.out_dir) / "checkpoints"
    tick_until(r, rec.id, lambda j: not j.active or (ckpts.is_dir() and any(ckpts.iterdir())), timeout=240,
               interval=0.2)
    if not r.get(rec.id).active:
        pytest.skip("training finished before its first checkpoint; nothing to resume")
    time.sleep(0.5)  # let the checkpoint's rename complete
    os.killpg(r.get(rec.id).pid, signal.SIGKILL)
    failed = tick_until(r, rec.id, lambda j: not j.active, timeout=30)
    assert failed.status == "failed" and "signal 9" in failed.error
    step_at_kill = failed.metrics.get("step", 0)
    r.resume(rec.id)
    done = tick_until(r, rec.id, lambda j: not j.active, timeout=300, interval=0.2)
    assert done.status == "succeeded", r.log_tail(rec.id)
    assert "--resume" in r.log_tail(rec.id, 1 << 20)
    assert done.attempts == 2 and done.metrics["step"] >= step_at_kill
