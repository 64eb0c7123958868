"""Explaining as a job step: the pipeline runs `jumpscope explain` after the index when the spec names an
explainer; through the admin API a job labels its SAE's latents (real explain CLI in a child process)."""

from __future__ import annotations

import json
import sys
from contextlib import closing

import pytest

from app.jobs.commands import Step, pipeline
from app.jobs.spec import JobSpec

CORPUS = dict(d_sae=24, tokens=4096, model="/root/m", corpus="/root/c.txt")


def test_pipeline_explains_after_the_index_only_when_configured(tmp_path):
    out = tmp_path / "sae"
    assert [s.name for s in pipeline(JobSpec(**CORPUS), out, resume=False)] == ["train", "eval", "index"]
    steps = pipeline(JobSpec(**CORPUS, explainer="builtin"), out, resume=False, python="/py")
    assert [s.name for s in steps] == ["train", "eval", "index", "explain"]
    assert steps[-1].argv == ("/py", "-m", "app.cli", "explain", "--sae", str(out), "--explainer", "builtin")
    acts = JobSpec(d_sae=8, tokens=4096, activations="/a.safetensors", explainer="builtin")
    last = pipeline(acts, out, resume=False)[-1]
    assert last.name == "explain" and last.argv == () and "no index" in last.note
    with pytest.raises(ValueError, match="explainer"):
        JobSpec(**CORPUS, explainer="gpt-4")


@pytest.fixture
def explain_services(explain_index):
    from app.web.services import Services

    return Services.load(None, [explain_index], device="cpu")


def test_admin_job_explains_the_trained_sae(tmp_path, explain_services, explain_index):
    from fastapi.testclient import TestClient

    from app.explain import store
    from tests.jobs.fakes import shutdown_runner
    from tests.web.admin_fixtures import AUTH, make_admin_app, wait_for

    def fake_train_then_real_explain(spec, out_dir, *, resume, python=None, **kw):
        """'Training' copies the indexed SAE folder into place; the explain step is the real pipeline's."""
        copy = f"import shutil; shutil.copytree({str(explain_index)!r}, {str(out_dir)!r}, dirs_exist_ok=True)"
        real = [s for s in pipeline(spec, out_dir, resume=resume, python=sys.executable) if s.name == "explain"]
        return [Step("train", "training", (sys.executable, "-c", copy)), *real]

    root = tmp_path / "corpora"
    root.mkdir()
    (root / "c.txt").write_text("some text\n")
    app = make_admin_app(tmp_path, explain_services, root, pipeline_fn=fake_train_then_real_explain)
    runner = app.state.job_runner
    try:
        with TestClient(app, raise_server_exceptions=False) as c:
            bad = c.post("/api/admin/jobs", headers=AUTH, json={**CORPUS, "model": "org/m", "corpus": "c.txt",
                                                                "explainer": "nope"})
            assert bad.status_code == 422 and "explainer" in bad.text
            r = c.post("/api/admin/jobs", headers=AUTH, json={**CORPUS, "model": "org/m", "corpus": "c.txt",
                                                              "name": "labelled", "explainer": "builtin"})
            assert r.status_code == 201, r.text
            job = wait_for(c, r.json()["id"], lambda j: j["status"] not in ("queued", "running"), timeout=120)
            assert job["status"] == "succeeded", job
            assert "explain done" in job["log_tail"] and '"explained"' in job["log_tail"]
            db = tmp_path / "data" / "saes" / "labelled" / "index.db"
            with closing(store.open_db(db, readonly=True)) as conn:
                done, who = store.done_latents(conn, "builtin"), store.explainers(conn)
            assert len(done) >= 5 and set(who) == {"builtin"}
    finally:
        shutdown_runner(runner)


@pytest.mark.slow  # three explain processes (~20 s on an idle 2-core CPU)
def test_explain_job_for_an_existing_sae_progress_cancel_resume(tmp_path, explain_services, explain_index):
    import shutil

    from fastapi.testclient import TestClient

    from app.explain import store
    from tests.jobs.fakes import shutdown_runner
    from tests.web.admin_fixtures import AUTH, make_admin_app, wait_for

    root = tmp_path / "corpora"
    root.mkdir()
    app = make_admin_app(tmp_path, explain_services, root)
    runner = app.state.job_runner
    sae_dir = tmp_path / "data" / "saes" / "mine"
    shutil.copytree(explain_index, sae_dir)
    try:
        with TestClient(app, raise_server_exceptions=False) as c:
            assert c.post("/api/admin/explain", json={"sae": "mine"}).status_code == 401
            missing = c.post("/api/admin/explain", headers=AUTH, json={"sae": "other"})
            assert missing.status_code == 404 and "no indexed SAE" in missing.json()["detail"]
            for bad in ({"sae": "../x"}, {"sae": "mine", "explainer": "gpt"}, {"sae": "mine", "latents": "a-b"}):
                assert c.post("/api/admin/explain", headers=AUTH, json=bad).status_code == 422, bad
            # A subset first: only those latents get explanations.
            r = c.post("/api/admin/explain", headers=AUTH, json={"sae": "mine", "latents": "0-4"})
            assert r.status_code == 201, r.text
            job = wait_for(c, r.json()["id"], lambda j: j["status"] not in ("queued", "running"), timeout=120)
            assert job["status"] == "succeeded" and job["progress"] == 1.0 and job["sae_dir"] == str(sae_dir)
            with closing(store.open_db(sae_dir / "index.db", readonly=True)) as conn:
                first = store.done_latents(conn, "builtin")
            assert first and first <= set(range(5))
            # Cancel a whole-SAE run at once, then resume it: it finishes and keeps what the subset did.
            r = c.post("/api/admin/explain", headers=AUTH, json={"sae": "mine"})
            job_id = r.json()["id"]
            assert c.delete(f"/api/admin/jobs/{job_id}", headers=AUTH).json()["status"] == "cancelled"
            # Cancelled at once, but its process may still be stopping (resume answers 409 until it has).
            wait_for(c, job_id, lambda j: j["status"] == "cancelled" and job_id not in runner._active, timeout=60)
            assert c.post(f"/api/admin/jobs/{job_id}/resume", headers=AUTH).status_code == 200
            done = wait_for(c, job_id, lambda j: j["status"] not in ("queued", "running"), timeout=120)
            assert done["status"] == "succeeded", done
            last = [json.loads(x) for x in done["log_tail"].splitlines() if x.startswith('{"index"')][-1]
            assert last["skipped"] >= len(first) and last["failed"] == 0  # the subset's work was kept
            # Deleting the job's record with files=true must not delete the SAE it explained.
            assert c.post(f"/api/admin/jobs/{job_id}/delete?files=true", headers=AUTH).status_code == 200
            assert (sae_dir / "index.db").is_file()
    finally:
        shutdown_runner(runner)
