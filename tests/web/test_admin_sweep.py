"""An admin sweep job: one job trains two SAEs (the real `jumpscope train`), its record shows per-SAE progress,
and both SAEs are served when it succeeds."""

from __future__ import annotations

import json

import pytest

from tests.jobs.fakes import shutdown_runner
from tests.web import admin_fixtures as fx
from tests.web.admin_fixtures import AUTH, login, make_admin_app, wait_for

admin_app, admin_client, corpus_root = fx.admin_app, fx.admin_client, fx.corpus_root  # shared fixtures
FORM = {"source": "activations", "activations": "acts.safetensors", "d_sae": "16", "tokens": "4096",
        "hook": "resid_post", "layer": "0", "model": "org/model", "corpus": ""}

JOB = {"d_sae": 16, "tokens": 4096, "activations": "acts32.safetensors", "model": "org/model", "hook": "resid_post",
       "layer": 0, "name": "swept", "sweep": {"d_sae": [8, 16]}}


@pytest.mark.slow  # two real `jumpscope train` subprocess runs (~90 s on 2 cores)
def test_sweep_job_trains_each_sae_with_its_progress(tmp_path, services, corpus_root):
    import torch
    from fastapi.testclient import TestClient

    from app.jobs.commands import pipeline
    from app.training.activations import save_activation_file

    d_model = services.lm.d_model  # the served model's width, so the app can load the trained SAEs
    save_activation_file(corpus_root / "acts32.safetensors", torch.randn(512, d_model) + 0.1)

    app = make_admin_app(tmp_path, services, corpus_root, pipeline_fn=pipeline, device="cpu")
    runner = app.state.job_runner
    try:
        with TestClient(app, raise_server_exceptions=False) as c:
            r = c.post("/api/admin/jobs", headers=AUTH, json=JOB)
            assert r.status_code == 201, r.text
            job = wait_for(c, r.json()["id"], lambda j: j["status"] in ("succeeded", "failed"), timeout=240)
            assert job["status"] == "succeeded", c.get(f"/api/admin/jobs/{job['id']}", headers=AUTH).text
            detail = c.get(f"/api/admin/jobs/{job['id']}", headers=AUTH).json()
            runs = detail["metrics"]["latest"]["runs"]
            assert set(runs) == {"d8", "d16"} and detail["progress"] == 1.0
            folder = tmp_path / "data" / "saes" / "swept"
            for name, run in runs.items():  # each SAE's own progress, as its own metrics.jsonl says
                last = json.loads((folder / name / "metrics.jsonl").read_text().splitlines()[-1])
                assert run["step"] == run["total_steps"] == last["step"] and run["l0"] == last["l0"]
            login(c)
            page = c.get(f"/admin/jobs/{job['id']}").text  # the job page: one row per SAE with its progress
            for name, run in runs.items():
                row = page[page.index(f'<tr data-run="{name}">'):]
                assert f'<progress max="{run["total_steps"]}" value="{run["step"]}">' in row[: row.index("</tr>")]
            served = {s["id"]: s for s in c.get("/api/saes").json()}
            widths = sorted(s["d_sae"] for s in served.values() if s["id"] in ("d8", "d16"))
            assert widths == [8, 16], served.keys()
    finally:
        shutdown_runner(runner)


def test_the_form_launches_a_sweep_job(admin_client):
    csrf = login(admin_client)
    hx = {"HX-Request": "true"}
    r = admin_client.post("/admin/jobs", headers=hx, data={**FORM, "csrf_token": csrf, "name": "formsweep",
                                                           "sweep_d_sae": "8, 16", "sweep_target_l0": ""})
    assert r.status_code == 200 and r.headers["HX-Redirect"].startswith("/admin/jobs/")
    job = admin_client.get(f"/api/admin/jobs/{r.headers['HX-Redirect'].rsplit('/', 1)[1]}", headers=AUTH).json()
    assert job["spec"]["sweep"] == {"d_sae": [8, 16], "layer": None, "target_l0": None}
    bad = admin_client.post("/admin/jobs", headers=hx, data={**FORM, "csrf_token": csrf, "name": "badsweep",
                                                             "sweep_d_sae": "8,x"})
    assert bad.status_code == 422 and "sweep.d_sae" in bad.text
    bad = admin_client.post("/admin/jobs", headers=hx, data={**FORM, "csrf_token": csrf, "name": "badsweep",
                                                             "sweep_layer": "0,1"})
    assert bad.status_code == 422 and "needs a corpus job" in bad.text


def test_the_form_launches_a_job_with_a_polish(admin_client):
    csrf = login(admin_client)
    hx = {"HX-Request": "true"}
    page = admin_client.get("/admin").text
    assert 'name="polish_share"' in page
    r = admin_client.post("/admin/jobs", headers=hx, data={**FORM, "csrf_token": csrf, "name": "formpolish",
                                                           "target_l0": "3", "polish_share": "0.5"})
    assert r.status_code == 200 and r.headers["HX-Redirect"].startswith("/admin/jobs/")
    job = admin_client.get(f"/api/admin/jobs/{r.headers['HX-Redirect'].rsplit('/', 1)[1]}", headers=AUTH).json()
    assert job["spec"]["polish_share"] == 0.5
    bad = admin_client.post("/admin/jobs", headers=hx, data={**FORM, "csrf_token": csrf, "name": "badpolish",
                                                             "polish_share": "1.5"})
    assert bad.status_code == 422 and "polish_share" in bad.text

