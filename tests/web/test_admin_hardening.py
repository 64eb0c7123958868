"""Issue 16 through the admin API: an activation-file job's SAE is served (labelled with its hook) and served again
after a restart; a damaged jobs.db answers 503; finished jobs can be deleted and their names reused; tokens below a
batch are a 422 naming the minimum; outside paths get one answer whether they exist or not."""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys

from fastapi.testclient import TestClient

from app.jobs.commands import Step
from tests.jobs.fakes import shutdown_runner
from tests.web import admin_fixtures as fx
from tests.web.admin_fixtures import AUTH, make_admin_app, wait_for

admin_app, admin_client, corpus_root = fx.admin_app, fx.admin_client, fx.corpus_root  # shared fixtures

JOB = {"d_sae": 16, "tokens": 4096, "activations": "acts.safetensors", "model": "org/model", "hook": "resid_post",
       "layer": 1}

# Stands in for `train --activations`: writes a real SAE whose cfg.json has no model or hook (hook_name null).
COPY_SAE = """
import json, shutil, sys
src, out = sys.argv[1], sys.argv[2]
shutil.copytree(src, out, dirs_exist_ok=True)
cfg = json.load(open(out + "/cfg.json"))
cfg["metadata"].update(model_name=None, hook_name=None)
json.dump(cfg, open(out + "/cfg.json", "w"))
"""


def _copy_sae_pipeline(sae_folder):
    def make(spec, out_dir, *, resume, **_):
        return [Step("train", "training", (sys.executable, "-c", COPY_SAE, str(sae_folder), str(out_dir)))]
    return make


def test_activation_job_sae_is_served_now_and_after_a_restart(tmp_path, services, corpus_root, plain_sae_folder):
    app = make_admin_app(tmp_path, services, corpus_root, pipeline_fn=_copy_sae_pipeline(plain_sae_folder))
    runner = app.state.job_runner
    try:
        with TestClient(app) as c:
            r = c.post("/api/admin/jobs", headers=AUTH, json={**JOB, "name": "from-acts"})
            assert r.status_code == 201, r.text
            job = wait_for(c, r.json()["id"], lambda j: j["status"] not in ("queued", "running"))
            assert job["status"] == "succeeded" and job["error"] is None, job  # before: "metadata has no hook_name"
            assert "from-acts" in app.state.services.ids()
            meta = json.loads((tmp_path / "data" / "saes" / "from-acts" / "cfg.json").read_text())["metadata"]
            assert meta["hook_name"] == "blocks.1.hook_resid_post" and meta["model_name"] == "org/model"
    finally:
        shutdown_runner(runner)
        runner.store.close()
    # A new server on the same data dir serves the job's SAE again.
    again = make_admin_app(tmp_path, services, corpus_root)
    again_runner = again.state.job_runner
    try:
        assert "from-acts" not in again.state.services.ids()
        with TestClient(again) as c:
            assert c.get("/api/admin/jobs", headers=AUTH).status_code == 200
            assert "from-acts" in again.state.services.ids()
    finally:
        shutdown_runner(again_runner)


class _BrokenConnection:
    def execute(self, *_a, **_k):
        raise sqlite3.DatabaseError("database disk image is malformed")

    def close(self) -> None:
        pass


def test_a_jobs_db_that_goes_bad_answers_503(admin_client):
    store = admin_client.app.state.job_runner.store
    good, store._db = store._db, _BrokenConnection()
    try:
        for method, url in (("get", "/api/admin/jobs"), ("get", "/api/admin/jobs/abc"),
                            ("delete", "/api/admin/jobs/abc"), ("post", "/api/admin/jobs/abc/delete")):
            r = getattr(admin_client, method)(url, headers=AUTH)
            assert r.status_code == 503, (url, r.status_code, r.text)
            assert "malformed" in r.json()["detail"] and "jobs" in r.json()["detail"]
        r = admin_client.post("/api/admin/jobs", headers=AUTH, json=JOB)
        assert r.status_code == 503, r.text
    finally:
        store._db = good


def test_delete_a_finished_job_and_reuse_its_name(admin_client, tmp_path):
    r = admin_client.post("/api/admin/jobs", headers=AUTH, json={**JOB, "name": "reused"})
    job_id = r.json()["id"]
    busy = admin_client.post(f"/api/admin/jobs/{job_id}/delete", headers=AUTH)
    assert busy.status_code == 409 and "cancel" in busy.json()["detail"]
    admin_client.delete(f"/api/admin/jobs/{job_id}", headers=AUTH)  # DELETE still cancels
    wait_for(admin_client, job_id, lambda j: job_id not in admin_client.app.state.job_runner._active)
    dup = admin_client.post("/api/admin/jobs", headers=AUTH, json={**JOB, "name": "reused"})
    assert dup.status_code == 409 and "delete that job" in dup.json()["detail"]
    gone = admin_client.post(f"/api/admin/jobs/{job_id}/delete?files=true", headers=AUTH)
    assert gone.status_code == 200, gone.text
    assert gone.json() == {"id": job_id, "name": "reused", "files_removed": True, "sae_unloaded": False}
    assert admin_client.get(f"/api/admin/jobs/{job_id}", headers=AUTH).status_code == 404
    assert not (tmp_path / "data" / "saes" / "reused").exists()
    again = admin_client.post("/api/admin/jobs", headers=AUTH, json={**JOB, "name": "reused"})
    assert again.status_code == 201, again.text
    assert admin_client.post("/api/admin/jobs/nope/delete", headers=AUTH).status_code == 404
    admin_client.delete(f"/api/admin/jobs/{again.json()['id']}", headers=AUTH)


def test_tokens_below_one_batch_is_a_422_with_the_minimum(admin_client):
    r = admin_client.post("/api/admin/jobs", headers=AUTH, json={**JOB, "tokens": 256})
    assert r.status_code == 422 and "4096" in r.json()["detail"]
    r = admin_client.post("/api/admin/jobs", headers=AUTH, json={k: v for k, v in JOB.items() if k != "layer"})
    assert r.status_code == 422 and "'layer'" in r.json()["detail"]
    assert admin_client.get("/api/admin/jobs", headers=AUTH).json() == []


def test_outside_path_errors_do_not_tell_whether_the_path_exists(admin_client, tmp_path):
    details = []
    for path in (tmp_path / "outside.safetensors", tmp_path / "no-such.safetensors"):
        r = admin_client.post("/api/admin/jobs", headers=AUTH, json={**JOB, "activations": str(path)})
        assert r.status_code == 400
        details.append(r.json()["detail"].replace(str(path), "<p>"))
    assert details[0] == details[1] and "outside" in details[0]


def test_job_page_offers_delete_for_finished_jobs(admin_client, tmp_path):
    csrf = fx.login(admin_client)
    r = admin_client.post("/api/admin/jobs", headers=AUTH, json={**JOB, "name": "page-del"})
    job_id = r.json()["id"]
    assert 'id="delete-job"' not in admin_client.get(f"/admin/jobs/{job_id}").text  # not while active
    admin_client.delete(f"/api/admin/jobs/{job_id}", headers=AUTH)
    wait_for(admin_client, job_id, lambda j: job_id not in admin_client.app.state.job_runner._active)
    page = admin_client.get(f"/admin/jobs/{job_id}")
    assert f'action="/admin/jobs/{job_id}/delete"' in page.text and 'name="files"' in page.text
    assert admin_client.post(f"/admin/jobs/{job_id}/delete", data={"files": "1"}).status_code == 403  # no CSRF
    r = admin_client.post(f"/admin/jobs/{job_id}/delete", data={"files": "1", "csrf_token": csrf},
                          follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/admin"
    assert admin_client.get(f"/api/admin/jobs/{job_id}", headers=AUTH).status_code == 404
    assert not (tmp_path / "data" / "saes" / "page-del").exists()
    shutil.rmtree(tmp_path / "data" / "saes", ignore_errors=True)


def test_succeeded_job_saes_are_served_again_at_start_up(tmp_path, services, corpus_root, plain_sae_folder):
    from app.jobs import JobStore

    store = JobStore(tmp_path / "data" / "jobs" / "jobs.db")
    saes = tmp_path / "data" / "saes"
    for name, status in (("kept", "succeeded"), ("broken", "succeeded"), ("never", "failed")):
        shutil.copytree(plain_sae_folder, saes / name)
        rec = store.create(name, JOB, saes / name, tmp_path / f"{name}.log")
        store.update(rec.id, status=status)
    (saes / "broken" / "cfg.json").write_text("{")
    store.close()
    app = make_admin_app(tmp_path, services, corpus_root)
    runner = app.state.job_runner
    try:
        with TestClient(app) as c:
            # At start-up (FastAPI 0.110 runs no router lifespans: then with the first admin request).
            assert c.get("/api/admin/jobs", headers=AUTH).status_code == 200
            ids = app.state.services.ids()
            assert "kept" in ids and "never" not in ids and "broken" not in ids
            assert str(saes / "broken") in app.state.services.failed  # reported, the others still served
    finally:
        shutdown_runner(runner)
