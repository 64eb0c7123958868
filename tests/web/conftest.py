"""Web fixtures: one tiny model + random SAE folder, the loaded model service, and a TestClient.

The model service is session scoped (loading is the slow part); every test gets its own app around it.
"""

from __future__ import annotations

import pytest

from tests.conftest import build_tiny_index
from tests.steering.helpers import make_sae


@pytest.fixture(scope="session")
def sae_folder(tmp_path_factory, tiny_model_dir):
    """A native SAE folder on the tiny Llama, with sparsity and eval.json beside it."""
    import json

    import torch

    model_dir = tiny_model_dir("llama")
    folder = tmp_path_factory.mktemp("saes") / "tiny-sae"
    sae = make_sae(32, 64)
    sae.cfg.metadata["model_name"] = str(model_dir)
    sae.save(folder, sparsity=torch.linspace(-4, -1, 64))
    (folder / "eval.json").write_text(json.dumps({"fvu": 0.25, "l0": 7.5}))
    return folder


@pytest.fixture(scope="session")
def plain_sae_folder(tmp_path_factory, tiny_model_dir):
    """A second SAE on the same model with no index, eval or sparsity (dashboards fall back to weights)."""
    folder = tmp_path_factory.mktemp("saes") / "plain-sae"
    sae = make_sae(32, 48, seed=5)
    sae.cfg.metadata["model_name"] = str(tiny_model_dir("llama"))
    sae.save(folder)
    return folder


@pytest.fixture(scope="session")
def indexed(sae_folder, tmp_path_factory):
    """Build the real latent index (app.index) for `sae_folder` on a tiny corpus."""
    build_tiny_index(sae_folder, tmp_path_factory)
    return True


@pytest.fixture(scope="session")
def services(sae_folder, plain_sae_folder, indexed):
    from app.web.services import Services

    return Services.load(None, [sae_folder, plain_sae_folder], device="cpu")


@pytest.fixture
def settings(tmp_path):
    from app.web.settings import Settings

    return Settings(data_dir=tmp_path / "data", max_prompt_tokens=64, max_new_tokens=24, max_interventions=4,
                    max_top_k=32, max_body_bytes=4096)


@pytest.fixture
def app(settings, services):
    from app.web import create_app

    return create_app(settings, services=services)


@pytest.fixture
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
