"""Fixtures for the admin tests (imported by tests/web/test_admin*.py): an app with an admin token, a corpus root
holding a tiny activation file, and a job runner whose training step is the fast fake trainer."""

from __future__ import annotations

import re

import pytest

from tests.jobs.fakes import fake_pipeline, shutdown_runner

TOKEN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def corpus_root(tmp_path):
    """A corpus root with an activation file, a text file and a folder; a secret file lies outside it."""
    import torch
    from safetensors.torch import save_file

    root = tmp_path / "corpora"
    (root / "texts").mkdir(parents=True)
    (root / "texts" / "a.txt").write_text("The red fox jumps over the lazy dog.\n\nA second paragraph.\n")
    save_file({"activations": torch.randn(256, 8, generator=torch.Generator().manual_seed(0))},
              str(root / "acts.safetensors"))
    (tmp_path / "outside.safetensors").write_bytes((root / "acts.safetensors").read_bytes())
    return root


def make_admin_app(tmp_path, services, corpus_root, pipeline_fn=None, token: str | None = TOKEN, **runner_kw):
    """create_app with an admin token and a started runner whose pipeline is `pipeline_fn` (default: fake)."""
    from app.jobs import JobStore
    from app.jobs.runner import JobRunner
    from app.web import create_app
    from app.web.admin_service import _register_with
    from app.web.services import Services
    from app.web.settings import Settings

    settings = Settings(data_dir=tmp_path / "data", corpus_root=corpus_root, admin_token=token)
    app = create_app(settings, services=Services(services.lm))  # own registry: registrations stay local
    store = JobStore(tmp_path / "data" / "jobs" / "jobs.db")
    runner_kw.setdefault("poll_interval", 0.05)
    runner_kw.setdefault("term_grace", 2.0)
    runner = JobRunner(store, settings.data_dir, pipeline_fn=pipeline_fn or fake_pipeline(steps=200, sleep=0.05),
                       on_success=_register_with(app), **runner_kw)
    runner.start()
    app.state.job_runner = runner
    return app


@pytest.fixture
def admin_app(tmp_path, services, corpus_root):
    app = make_admin_app(tmp_path, services, corpus_root)
    runner = app.state.job_runner  # the lifespan drops it from app.state on shutdown; jobs must still die
    yield app
    shutdown_runner(runner)


@pytest.fixture
def admin_client(admin_app):
    from fastapi.testclient import TestClient

    with TestClient(admin_app, raise_server_exceptions=False) as c:
        yield c


def login(client) -> str:
    """Log in through the form; returns the session's CSRF token (read from the admin page)."""
    page = client.get("/admin")
    login_csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    r = client.post("/admin/login", data={"token": TOKEN, "csrf_token": login_csrf}, follow_redirects=False)
    assert r.status_code == 303, r.text
    home = client.get("/admin")
    return re.search(r'name="csrf_token" value="([^"]+)"', home.text).group(1)


def wait_for(client, job_id: str, pred, timeout: float = 20.0) -> dict:
    """Poll GET /api/admin/jobs/{id} until pred(job) holds."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/admin/jobs/{job_id}", headers=AUTH).json()
        if pred(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for job {job_id}: {job}")
        time.sleep(0.05)
