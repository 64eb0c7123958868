"""Issue 16 in the runner: job processes get no secrets, umask 0o077 and an empty private cwd (so a hub-id-shaped
model name cannot pick up a local folder); records of finished jobs can be deleted and their names reused; an
activation-file job's SAE is labelled with its LM and hook before it is registered."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from app.jobs.commands import Step
from app.jobs.environment import child_env
from app.jobs.runner import JobConflict
from app.jobs.spec import JobSpec
from tests.jobs.fakes import fake_pipeline, tick_until

SPEC = JobSpec(d_sae=8, tokens=4096, activations="/unused.safetensors")

# A step that reports what the job process sees: its cwd, environment, umask, and whether 'org/model' resolves.
PROBE = """
import json, os, sys
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
umask = os.umask(0); os.umask(umask)
seen = {"cwd": os.getcwd(), "listing": os.listdir("."), "env": dict(os.environ), "umask": umask,
        "hub_id_is_local": os.path.isdir("org/model")}
with open(os.path.join(out, "probe.json"), "w") as fh:
    json.dump(seen, fh)
for name in ("cfg.json", "sae_weights.safetensors"):
    open(os.path.join(out, name), "w").write("{}")
"""


def probe_pipeline(spec, out_dir, *, resume, **_):
    return [Step("train", "training", (sys.executable, "-c", PROBE, str(out_dir)))]


def test_job_processes_get_no_secrets_a_private_umask_and_an_empty_cwd(make_runner, monkeypatch, tmp_path):
    monkeypatch.setenv("JUMPSCOPE_ADMIN_TOKEN", "super-secret-admin-token")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "cloud-secret")
    monkeypatch.setenv("HF_HOME", "/hf-home")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.chdir(tmp_path)  # the server's cwd
    r = make_runner(pipeline_fn=probe_pipeline)
    # Folders a hub id would resolve to if the job ran in the logs folder (the old cwd) or in the server's cwd.
    for base in (r.logs_dir, tmp_path):
        (base / "org" / "model").mkdir(parents=True)
    rec = r.submit(SPEC)
    done = tick_until(r, rec.id, lambda j: not j.active)
    assert done.status == "succeeded", r.log_tail(rec.id)
    seen = json.loads((Path(rec.out_dir) / "probe.json").read_text())
    env = seen["env"]
    assert "JUMPSCOPE_ADMIN_TOKEN" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert "super-secret-admin-token" not in json.dumps(env)
    assert env["HF_HOME"] == "/hf-home" and env["CUDA_VISIBLE_DEVICES"] == "1" and env["OMP_NUM_THREADS"] == "2"
    assert env["PATH"] and env["PYTHONUNBUFFERED"] == "1"
    assert seen["umask"] == 0o077
    assert seen["listing"] == [] and not seen["hub_id_is_local"]
    assert Path(seen["cwd"]).resolve().parent == r.run_dir.resolve()
    assert not (r.run_dir / rec.id).exists()  # removed when the job ended
    # What the job wrote, its log and the runner's folders are private to the owner.
    assert stat.S_IMODE((Path(rec.out_dir) / "probe.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(rec.out_dir).stat().st_mode) == 0o700
    assert stat.S_IMODE(Path(rec.log_path).stat().st_mode) == 0o600
    for d in (r.saes_dir, r.logs_dir, r.run_dir, r.data_dir / "jobs"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d


def test_child_env_is_an_allow_list():
    env = child_env({"EXTRA": "x"}, base={"PATH": "/bin", "HOME": "/h", "LANG": "C.UTF-8", "LC_ALL": "C",
                                         "PYTHONHASHSEED": "0", "HF_TOKEN": "hf", "TRANSFORMERS_CACHE": "/t",
                                         "NVIDIA_VISIBLE_DEVICES": "all", "TMPDIR": "/tmp/x", "MKL_NUM_THREADS": "1",
                                         "JUMPSCOPE_ADMIN_TOKEN": "t", "JUMPSCOPE_SESSION_SECRET": "s",
                                         "GITHUB_TOKEN": "g", "DATABASE_URL": "postgres://u:p@h/db"})
    assert {"PATH", "HOME", "LANG", "LC_ALL", "PYTHONHASHSEED", "HF_TOKEN", "TRANSFORMERS_CACHE",
            "NVIDIA_VISIBLE_DEVICES", "TMPDIR", "MKL_NUM_THREADS", "EXTRA"} <= set(env)
    assert not {"JUMPSCOPE_ADMIN_TOKEN", "JUMPSCOPE_SESSION_SECRET", "GITHUB_TOKEN", "DATABASE_URL"} & set(env)


def test_a_finished_job_can_be_deleted_and_its_name_reused(make_runner):
    r = make_runner(pipeline_fn=fake_pipeline(steps=2, sleep=0.01))
    first = r.submit(SPEC.model_copy(update={"name": "again"}))
    with pytest.raises(JobConflict, match="cancel it"):
        r.delete(first.id)  # still queued
    done = tick_until(r, first.id, lambda j: not j.active)
    assert done.status == "succeeded"
    with pytest.raises(JobConflict, match="delete that job"):
        r.submit(SPEC.model_copy(update={"name": "again"}))
    r.delete(first.id)  # the record only: the SAE folder stays, so the name is still taken (by the folder)
    assert r.get(first.id) is None and Path(done.out_dir).is_dir()
    with pytest.raises(JobConflict, match="SAE folder"):
        r.submit(SPEC.model_copy(update={"name": "again"}))
    second = r.submit(SPEC.model_copy(update={"name": "again2"}))
    tick_until(r, second.id, lambda j: not j.active)
    removed = r.delete(second.id, files=True)
    assert removed.name == "again2" and not Path(removed.out_dir).exists() and not Path(removed.log_path).exists()
    third = r.submit(SPEC.model_copy(update={"name": "again2"}))  # name free again
    assert tick_until(r, third.id, lambda j: not j.active).status == "succeeded"
    with pytest.raises(KeyError):
        r.delete("nope")


def test_delete_never_removes_files_outside_the_runner_folders(make_runner, tmp_path):
    r = make_runner(pipeline_fn=fake_pipeline(steps=1, sleep=0.01))
    rec = r.submit(SPEC)
    tick_until(r, rec.id, lambda j: not j.active)
    precious = tmp_path / "precious"
    precious.mkdir()
    (tmp_path / "precious.log").write_text("keep")
    # A hand-edited record pointing elsewhere: only the record goes.
    r.store._db.execute("UPDATE jobs SET out_dir = ?, log_path = ? WHERE id = ?",
                        (str(precious), str(tmp_path / "precious.log"), rec.id))
    r.delete(rec.id, files=True)
    assert precious.is_dir() and (tmp_path / "precious.log").read_text() == "keep"


def test_activation_job_sae_is_labelled_before_it_is_registered(make_runner):
    seen = []
    r = make_runner(pipeline_fn=fake_pipeline(steps=2, sleep=0.01),
                    on_success=lambda rec, folder: seen.append(json.loads((folder / "cfg.json").read_text())))
    spec = SPEC.model_copy(update={"model": "org/model", "hook": "mlp_out", "layer": 3})
    rec = r.submit(spec)
    assert tick_until(r, rec.id, lambda j: not j.active).status == "succeeded"
    meta = seen[0]["metadata"]
    assert meta == {"model_name": "org/model", "hook_name": "blocks.3.hook_mlp_out", "hook_layer": 3}
    assert "labelled" in r.log_tail(rec.id)
