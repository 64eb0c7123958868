"""Web fixtures: one tiny model + random SAE folder, the loaded model service, and a TestClient.

The model service is session scoped (loading is the slow part); every test gets its own app around it.
"""

from __future__ import annotations

import pytest

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
def services(sae_folder):
    from app.web.services import Services

    return Services.load(None, [sae_folder], device="cpu")


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
