"""Admin JSON API: bearer auth (401 without/with a wrong token, 403 when the admin is off), launching,
listing, progress and metrics, cancel and resume, bad input as 4xx JSON, and path confinement."""

from __future__ import annotations

import os

import pytest

from tests.web import admin_fixtures as fx
from tests.web.admin_fixtures import AUTH, make_admin_app, wait_for

admin_app, admin_client, corpus_root = fx.admin_app, fx.admin_client, fx.corpus_root  # shared fixtures

JOB = {"d_sae": 16, "tokens": 4096, "activations": "acts.safetensors", "model": "org/model", "hook": "resid_post",
       "layer": 0}


def test_missing_or_wrong_token_is_401(admin_client):
    admin_client.app.state.auth_throttle.limit = 1000  # many wrong tokens on purpose; throttling: test_hardening_auth
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic dGVzdA=="},
                    {"Authorization": "Bearer " + AUTH["Authorization"][7:] + "x"},
                    {"Authorization": "Bearer \xc3\xa9".encode("latin-1")}):
        for method, url in (("get", "/api/admin/jobs"), ("post", "/api/admin/jobs"),
                            ("get", "/api/admin/jobs/abc"), ("delete", "/api/admin/jobs/abc")):
            r = getattr(admin_client, method)(url, headers=headers) if method != "post" else admin_client.post(
                url, headers=headers, json=JOB)
            assert r.status_code == 401, (method, url, headers, r.text)
            assert "detail" in r.json()
    assert admin_client.get("/api/admin/jobs", headers=AUTH).status_code == 200


def test_admin_off_without_token(tmp_path, services, corpus_root):
    from fastapi.testclient import TestClient

    from tests.jobs.fakes import shutdown_runner

    app = make_admin_app(tmp_path, services, corpus_root, token=None)
    runner = app.state.job_runner
    try:
        with TestClient(app) as c:
            r = c.get("/api/admin/jobs", headers=AUTH)
            assert r.status_code == 403 and "disabled" in r.json()["detail"]
    finally:
        shutdown_runner(runner)


def test_launch_progress_cancel_resume(admin_client):
    r = admin_client.post("/api/admin/jobs", headers=AUTH, json={**JOB, "name": "my-sae"})
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["status"] in ("queued", "running") and job["name"] == "my-sae"
    assert job["sae_dir"].endswith(os.path.join("data", "saes", "my-sae"))
    assert job["spec"]["activations"].endswith("acts.safetensors") and os.path.isabs(job["spec"]["activations"])
    running = wait_for(admin_client, job["id"], lambda j: j["metrics"]["latest"].get("step", 0) >= 3)
    assert running["status"] == "running" and 0 < running["progress"] < 1
    plot = running["metrics"]["series"]
    assert plot["step"][:3] == [1.0, 2.0, 3.0] and len(plot["loss"]) == len(plot["l0"]) == len(plot["step"]) >= 3
    assert "fake train" in running["log_tail"]
    listed = admin_client.get("/api/admin/jobs", headers=AUTH).json()
    assert [j["id"] for j in listed] == [job["id"]] and listed[0]["metrics"]["series"] is None
    conflict = admin_client.post(f"/api/admin/jobs/{job['id']}/resume", headers=AUTH)
    assert conflict.status_code == 409 and "detail" in conflict.json()
    cancelled = admin_client.delete(f"/api/admin/jobs/{job['id']}", headers=AUTH)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    wait_for(admin_client, job["id"], lambda j: job["id"] not in admin_client.app.state.job_runner._active)
    assert admin_client.delete(f"/api/admin/jobs/{job['id']}", headers=AUTH).json()["status"] == "cancelled"
    resumed = admin_client.post(f"/api/admin/jobs/{job['id']}/resume", headers=AUTH)
    assert resumed.status_code == 200 and resumed.json()["status"] == "queued"
    again = wait_for(admin_client, job["id"], lambda j: j["status"] == "running" and "resume=True" in j["log_tail"])
    assert again["attempts"] == 2 and "start at 0" not in again["log_tail"].split("resume requested")[-1]
    admin_client.delete(f"/api/admin/jobs/{job['id']}", headers=AUTH)
    dup = admin_client.post("/api/admin/jobs", headers=AUTH, json={**JOB, "name": "my-sae"})
    assert dup.status_code == 409


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 422),
        ({"d_sae": "many", "tokens": 10, "activations": "acts.safetensors"}, 422),
        ({**JOB, "d_sae": -1}, 422),
        ({**JOB, "hook": "resid_middle"}, 422),
        ({**JOB, "name": "../../etc"}, 422),
        ({**JOB, "corpus": "texts/a.txt"}, 422),  # two sources
        ({**JOB, "l0_coefficient": 1, "target_l0": 5}, 422),
        ({**JOB, "unknown": 1}, 422),
        ({**JOB, "tokens": 4095}, 422),  # below one training batch
        ({k: v for k, v in JOB.items() if k != "model"}, 422),  # activation file without its LM
        ({**JOB, "activations": "../outside.safetensors"}, 400),
        ({**JOB, "activations": "texts/../../outside.safetensors"}, 400),
        ({**JOB, "activations": "missing.safetensors"}, 400),
        ({**JOB, "activations": "texts"}, 400),
        ({"d_sae": 8, "tokens": 8, "model": "/etc", "corpus": "texts"}, 400),
        ({"d_sae": 8, "tokens": 8, "model": "gpt2", "corpus": "/etc/passwd"}, 400),
    ],
)
def test_bad_launch_input_is_4xx_json(admin_client, body, status):
    r = admin_client.post("/api/admin/jobs", headers=AUTH, json=body)
    assert r.status_code == status, r.text
    assert r.json()["detail"]
    assert admin_client.get("/api/admin/jobs", headers=AUTH).json() == []


def test_absolute_outside_and_symlink_escape_are_refused(admin_client, corpus_root, tmp_path):
    outside = tmp_path / "outside.safetensors"
    r = admin_client.post("/api/admin/jobs", headers=AUTH, json={**JOB, "activations": str(outside)})
    assert r.status_code == 400 and "outside" in r.json()["detail"]
    os.symlink(outside, corpus_root / "escape.safetensors")
    os.symlink(tmp_path, corpus_root / "escape-dir")
    for path in ("escape.safetensors", "escape-dir/outside.safetensors"):
        r = admin_client.post("/api/admin/jobs", headers=AUTH, json={**JOB, "activations": path})
        assert r.status_code == 400 and "outside" in r.json()["detail"], path
    inside = admin_client.post("/api/admin/jobs", headers=AUTH,
                               json={**JOB, "activations": str(corpus_root / "acts.safetensors")})
    assert inside.status_code == 201


def test_unknown_job_is_404(admin_client):
    for method in ("get", "delete"):
        r = getattr(admin_client, method)("/api/admin/jobs/doesnotexist", headers=AUTH)
        assert r.status_code == 404 and "detail" in r.json()
    assert admin_client.post("/api/admin/jobs/doesnotexist/resume", headers=AUTH).status_code == 404
    assert admin_client.get("/api/admin/jobs/" + "x" * 300, headers=AUTH).status_code == 404


def test_admin_routes_are_in_the_openapi_schema(admin_client):
    paths = admin_client.get("/openapi.json").json()["paths"]
    assert {"post", "get"} <= set(paths["/api/admin/jobs"])
    assert {"get", "delete"} <= set(paths["/api/admin/jobs/{job_id}"])
    assert "/admin" not in paths
