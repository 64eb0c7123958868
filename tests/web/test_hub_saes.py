"""Several `--sae hf://…` of one model at different layers, served together (SPEC §9), from an offline Hub cache.

Gemma Scope-shaped repos sized for the tiny Llama (d_model 32, 3 layers): two residual SAEs and one MLP SAE. One
encode request reads all three from one forward pass; every SAE's active latents match a float64 numpy JumpReLU on
the activations captured at its own hook.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.cli import build_parser, main
from tests.sae.hub_support import brute_force_encode, npz_bytes, offline_hub, put_repo, random_weights

D_MODEL, D_SAE = 32, 40
RES, MLP = "google/gemma-scope-2b-pt-res", "google/gemma-scope-2b-pt-mlp"
SAES = {  # reference → (hook, seed)
    f"hf://{RES}/layer_0/width_16k/average_l0_7": ("blocks.0.hook_resid_post", 21),
    f"hf://{RES}/layer_2/width_16k/average_l0_7": ("blocks.2.hook_resid_post", 22),
    f"hf://{MLP}/layer_1/width_16k/average_l0_9": ("blocks.1.hook_mlp_out", 23),
}


@pytest.fixture
def hub_saes(tmp_path, monkeypatch):
    """The three SAEs in an offline Hub cache; returns reference → weights."""
    cache = offline_hub(tmp_path, monkeypatch)
    weights = {ref: random_weights(D_MODEL, D_SAE, seed) for ref, (_, seed) in SAES.items()}
    for repo in (RES, MLP):
        prefix = f"hf://{repo}/"
        put_repo(cache, repo, {ref.removeprefix(prefix) + "/params.npz": npz_bytes(w)
                               for ref, w in weights.items() if ref.startswith(prefix)})
    return weights


def test_several_layers_of_one_model_serve_together(hub_saes, tiny_model_dir, tmp_path):
    from fastapi.testclient import TestClient

    from app.lm import load_lm
    from app.lm.hooks import capture_many
    from app.web import create_app
    from app.web.services import Services
    from app.web.settings import Settings

    model = str(tiny_model_dir("llama"))
    services = Services.load(model, list(SAES), device="cpu")
    assert services.failed == {}
    entries = services.entries()
    assert [e.hook for e in entries] == [hook for hook, _ in SAES.values()]
    ids = [e.id for e in entries]
    assert len(set(ids)) == 3
    app = create_app(Settings(data_dir=tmp_path / "data"), services=services)
    with TestClient(app) as client:
        listed = client.get("/api/saes").json()
        assert [s["hook"] for s in listed] == [hook for hook, _ in SAES.values()]
        body = client.post("/api/encode", json={"text": "The red fox jumps over the lazy dog.", "saes": ids,
                                                "top_k": D_SAE}).json()
    lm = load_lm(model, device="cpu")
    input_ids = torch.tensor([body["token_ids"]])
    acts = capture_many(lm, input_ids, None, [hook for hook, _ in SAES.values()])
    keep = [i for i, special in enumerate(body["special"]) if not special]
    fired = 0
    for entry, (ref, (hook, _)) in zip(entries, SAES.items(), strict=True):
        part = body["per_sae"][entry.id]
        assert part["hook"] == hook
        want = brute_force_encode(hub_saes[ref], acts[hook][0].double().numpy())
        assert [part["l0"][t] for t in keep] == [int((want[t] > 0).sum()) for t in keep]
        for t in keep:
            got = {row["latent"]: row["value"] for row in part["latents_per_token"][t]}
            expected = {int(i): want[t, i] for i in np.flatnonzero(want[t] > 0)}
            assert got.keys() == expected.keys()
            np.testing.assert_allclose([got[i] for i in expected], list(expected.values()), rtol=1e-4, atol=1e-4)
        fired += sum(part["l0"][t] for t in keep)
    assert fired > 0


def test_serve_cli_resolves_references(hub_saes, tiny_model_dir):
    from app.cli.serve import build_settings
    from app.sae.hub import resolve_sae_ref

    argv = ["serve", "--model", str(tiny_model_dir("llama"))]
    for ref in SAES:
        argv += ["--sae", ref]
    settings = build_settings(build_parser().parse_args(argv))
    assert settings.saes == [resolve_sae_ref(ref) for ref in SAES]
    assert all((p / "hub.json").is_file() for p in settings.saes)


@pytest.mark.parametrize("command", [["serve"], ["eval"], ["dial", "--factors", "1"],
                                     ["index", "--corpus", "hf:x", "--tokens", "8"]])
def test_missing_reference_is_one_line_exit_2(hub_saes, capsys, command):
    ref = f"hf://{RES}/layer_1/width_16k/average_l0_7"  # not in the cache, and offline
    assert main([command[0], "--sae", ref, *command[1:]]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "has no folder 'layer_1/width_16k/average_l0_7'" in err


def test_environment_references_resolve(hub_saes, tiny_model_dir, monkeypatch):
    """JUMPSCOPE_SAES arrives as Paths (hf:// prints as hf:/): still resolved to the same workspaces."""
    import json

    from app.cli.serve import build_settings
    from app.sae.hub import resolve_sae_ref

    monkeypatch.setenv("JUMPSCOPE_SAES", json.dumps(list(SAES)))
    settings = build_settings(build_parser().parse_args(["serve", "--model", str(tiny_model_dir("llama"))]))
    assert settings.saes == [resolve_sae_ref(ref) for ref in SAES]
