"""GET /api/saes/{sae}/latents/{latent} on an index whose loss effects are lazy: computed on first view (through
Services.run, with the served LM and SAE), cached in index.db, served from it afterwards."""

from __future__ import annotations

import shutil
from contextlib import closing

import pytest

from app.index.store import connect
from tests.conftest import TINY_TEXTS


@pytest.fixture
def lazy_client(tmp_path, sae_folder, services, settings):
    from fastapi.testclient import TestClient

    from app.index.builder import run_index
    from app.index.config import IndexConfig
    from app.web import create_app
    from app.web.services import Services

    folder = tmp_path / "lazy-sae"
    shutil.copytree(sae_folder, folder, ignore=shutil.ignore_patterns("index.db*"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(TINY_TEXTS))
    served = Services(services.lm)
    sae_id = served.register_sae(folder)
    cfg = IndexConfig(context_size=32, batch_contexts=4, top_k=5, n_intervals=3, per_interval=2,
                      window_before=6, window_after=3, loss_effects_when="lazy")
    run_index(served.lm, served.get(sae_id).sae, corpus, 1024, folder / "index.db", cfg, sae_dir=folder)
    with TestClient(create_app(settings, services=served), raise_server_exceptions=False) as c:
        yield c, sae_id, folder / "index.db", served.lm


def test_first_view_computes_and_caches_second_view_reads(lazy_client):
    client, sae_id, db, lm = lazy_client
    with closing(connect(db, readonly=True)) as conn:
        latent = conn.execute("SELECT latent FROM examples WHERE kind = 'top' AND loss IS NULL").fetchone()[0]
    calls = []
    handle = lm.model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        first = client.get(f"/api/saes/{sae_id}/latents/{latent}")
        n_first = len(calls)
        second = client.get(f"/api/saes/{sae_id}/latents/{latent}")
    finally:
        handle.remove()
    assert first.status_code == second.status_code == 200, first.text
    assert first.json()["loss_effects"] == second.json()["loss_effects"] == "computed"
    assert n_first >= 1 and len(calls) == n_first  # the second view ran no forward
    tops = first.json()["top_examples"]
    assert tops and all(e["loss_effect"] is not None for e in tops)
    assert [e["loss_effect"] for e in second.json()["top_examples"]] == [e["loss_effect"] for e in tops]
    with closing(connect(db, readonly=True)) as conn:
        assert conn.execute("SELECT loss IS NOT NULL FROM examples WHERE latent = ? AND kind = 'top'",
                            (latent,)).fetchone()[0] == 1
