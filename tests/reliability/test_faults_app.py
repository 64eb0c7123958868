"""Damaged files on a running installation: a corrupt or truncated SAE, index database or jobs database gives
a clear error for that one thing, and the app keeps serving everything else."""

from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient

from app.web import create_app
from tests.reliability.conftest import ADMIN_TOKEN

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _corrupt_weights(folder):
    w = folder / "sae_weights.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])


def _garbage_cfg(folder):
    (folder / "cfg.json").write_text('{"d_in": 32, "d_sae": ')


def _missing_weights(folder):
    (folder / "sae_weights.safetensors").unlink()


@pytest.mark.parametrize("damage", [_corrupt_weights, _garbage_cfg, _missing_weights])
def test_app_serves_the_good_sae_and_reports_the_bad_one(tmp_path, rel_saes, make_settings, damage):
    good, plain = rel_saes
    bad = tmp_path / "bad-sae"
    shutil.copytree(plain, bad)
    damage(bad)
    # The damaged SAE comes first: the model name must still be found from the good one.
    settings = make_settings(saes=[bad, good], device="cpu")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        health = client.get("/api/health").json()
        assert health["status"] == "ok"
        assert health["saes"] == ["good-sae"]
        # By folder name only: the unauthenticated health answer shows no server paths (issue 16).
        assert bad.name in health["failed_saes"] and health["failed_saes"][bad.name].strip()
        assert str(tmp_path) not in str(health)
        assert [s["id"] for s in client.get("/api/saes").json()] == ["good-sae"]
        r = client.post("/api/encode", json={"text": "The red fox", "sae": "good-sae"})
        assert r.status_code == 200 and r.json()["tokens"]
        assert client.get("/api/saes/good-sae/latents/3").status_code == 200
        r = client.get("/api/saes/bad-sae/latents/3")
        assert r.status_code == 404 and "detail" in r.json()
        assert client.get("/").status_code == 200


def _garbage_db(path):
    path.write_bytes(b"this is not a database" * 100)


def _truncated_db(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: max(200, len(raw) // 3)])


def _zeroed_pages(path):
    raw = bytearray(path.read_bytes())
    raw[4096: 4096 * 3] = b"\x00" * min(8192, max(0, len(raw) - 4096))
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", [_garbage_db, _truncated_db, _zeroed_pages])
def test_corrupt_index_db_is_a_clear_error_and_the_rest_still_works(tmp_path, rel_saes, rel_services,
                                                                      make_settings, damage):
    good, _ = rel_saes
    copy = tmp_path / "broken-index-sae"
    shutil.copytree(good, copy)
    for extra in ("index.db-wal", "index.db-shm"):
        (copy / extra).unlink(missing_ok=True)
    damage(copy / "index.db")
    sae_id = rel_services.register_sae(copy)
    try:
        with TestClient(create_app(make_settings(), services=rel_services), raise_server_exceptions=False) as c:
            r = c.get(f"/api/saes/{sae_id}/latents/3")
            # Either weight-only data (the index is skipped) or a clear 4xx/503 — never a 500.
            assert r.status_code < 500 or r.status_code == 503, r.text
            if r.status_code != 200:
                assert "index" in r.json()["detail"].lower()
            page = c.get(f"/latents/{sae_id}/3")
            assert page.status_code != 500, page.text[:500]
            assert c.post("/api/encode", json={"text": "red fox", "sae": sae_id}).status_code == 200
            assert c.get("/api/saes/good-sae/latents/3").status_code == 200  # the intact index still serves
            assert c.get("/api/health").status_code == 200
    finally:
        with rel_services._lock:
            rel_services.saes.pop(sae_id, None)


def test_corrupt_jobs_db_keeps_the_explorer_running(tmp_path, rel_services, make_settings):
    settings = make_settings()
    jobs_db = settings.data_dir / "jobs" / "jobs.db"
    jobs_db.parent.mkdir(parents=True)
    jobs_db.write_bytes(b"garbage, not sqlite" * 200)
    with TestClient(create_app(settings, services=rel_services), raise_server_exceptions=False) as c:
        assert c.get("/api/health").status_code == 200
        assert c.post("/api/encode", json={"text": "red fox"}).status_code == 200
        r = c.get("/api/admin/jobs", headers=AUTH)
        assert r.status_code != 500 and r.status_code >= 400, r.text  # the admin says what is wrong
        assert "jobs" in r.json()["detail"].lower()


def test_damaged_pages_inside_jobs_db_are_a_503_not_a_500(tmp_path, rel_services, make_settings):
    """A real SQLite file with a few pages XORed after a WAL checkpoint ('database disk image is malformed')."""
    from tests.jobs.test_store_damage import damage_pages, filled_db

    settings = make_settings()
    jobs_db = filled_db(settings.data_dir / "jobs" / "jobs.db")
    damage_pages(jobs_db)
    with TestClient(create_app(settings, services=rel_services), raise_server_exceptions=False) as c:
        assert c.post("/api/encode", json={"text": "red fox"}).status_code == 200  # the explorer serves on
        for url in ("/api/admin/jobs", "/api/admin/jobs/abc"):
            r = c.get(url, headers=AUTH)
            assert r.status_code == 503, r.text
            assert "damaged" in r.json()["detail"] and "jobs" in r.json()["detail"]
