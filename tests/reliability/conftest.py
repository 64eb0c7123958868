"""Reliability fixtures: a tiny model, an indexed SAE and a plain SAE on it, the loaded model service, and
an app factory with an admin token. Session scoped where loading is the slow part."""

from __future__ import annotations

import json

import pytest

from tests.conftest import build_tiny_index
from tests.steering.helpers import make_sae

ADMIN_TOKEN = "reliability-admin-token-0123456789"


@pytest.fixture(scope="session")
def rel_saes(tmp_path_factory, tiny_model_dir):
    """(indexed SAE folder, plain SAE folder) on the tiny Llama; the first has sparsity, eval.json and index.db."""
    import torch

    model_dir = tiny_model_dir("llama")
    root = tmp_path_factory.mktemp("rel-saes")
    good = root / "good-sae"
    sae = make_sae(32, 64)
    sae.cfg.metadata["model_name"] = str(model_dir)
    sae.save(good, sparsity=torch.linspace(-4, -1, 64))
    (good / "eval.json").write_text(json.dumps({"fvu": 0.25, "l0": 7.5}))
    plain = root / "plain-sae"
    other = make_sae(32, 48, seed=5)
    other.cfg.metadata["model_name"] = str(model_dir)
    other.save(plain)
    build_tiny_index(good, tmp_path_factory)
    return good, plain


@pytest.fixture(scope="session")
def rel_services(rel_saes):
    from app.web.services import Services

    return Services.load(None, list(rel_saes), device="cpu")


@pytest.fixture
def make_settings(tmp_path):
    """Settings for a test app: small limits, an admin token, a data dir and a corpus root under tmp_path."""
    from app.web.settings import Settings

    def make(**kw):
        base = dict(data_dir=tmp_path / "data", corpus_root=tmp_path / "corpora", admin_token=ADMIN_TOKEN,
                    max_prompt_tokens=64, max_new_tokens=8, max_interventions=4, max_top_k=16,
                    max_body_bytes=64 * 1024)
        base.update(kw)
        (tmp_path / "corpora").mkdir(exist_ok=True)
        return Settings(**base)

    return make


@pytest.fixture
def rel_client(make_settings, rel_services):
    """A TestClient (lifespan run) on an app around the shared model service."""
    from fastapi.testclient import TestClient

    from app.web import create_app

    with TestClient(create_app(make_settings(), services=rel_services), raise_server_exceptions=False) as c:
        yield c
