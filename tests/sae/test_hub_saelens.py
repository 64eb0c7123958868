"""`saelens://RELEASE/SAE_ID` through the registry of the real sae-lens package, offline against a test Hub cache.

The Gemma Scope 1 SAE is also read by sae-lens' own Gemma Scope loader from the same cache: weights and hook agree.
Skipped only with JUMPSCOPE_NO_INTEROP=1 (the lowest-bounds environment has no sae-lens).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

if os.environ.get("JUMPSCOPE_NO_INTEROP") == "1":
    pytest.skip("JUMPSCOPE_NO_INTEROP=1: this environment has no sae-lens", allow_module_level=True)

from sae_lens.loading.pretrained_sae_loaders import gemma_2_sae_huggingface_loader  # noqa: E402
from sae_lens.loading.pretrained_saes_directory import (  # noqa: E402
    get_pretrained_saes_directory,
    get_repo_id_and_folder_name,
)

from app.sae import SAEFormatError, load_sae  # noqa: E402
from app.sae.hub import resolve_sae_ref  # noqa: E402
from tests.sae.hub_support import (  # noqa: E402
    brute_force_encode,
    gemma_scope_2_bytes,
    npz_bytes,
    offline_hub,
    put_repo,
    random_weights,
    saelens_files,
)

D_IN, D_SAE = 16, 48


@pytest.fixture
def hub(tmp_path, monkeypatch):
    return offline_hub(tmp_path, monkeypatch)


def _check_encode(sae, weights) -> None:
    x = np.random.default_rng(0).normal(0, 1.5, (32, D_IN)).astype(np.float32)
    ours = sae.encode(torch.from_numpy(x)).detach().double().numpy()
    want = brute_force_encode(weights, x)
    assert 0 < (want > 0).sum() < want.size
    np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-5)


def test_gemma_scope_1_release_agrees_with_saelens_loader(hub):
    release, sae_id = "gemma-scope-2b-pt-res-canonical", "layer_6/width_16k/canonical"
    repo_id, folder = get_repo_id_and_folder_name(release, sae_id)
    weights = random_weights(D_IN, D_SAE, seed=11)
    put_repo(hub, repo_id, {f"{folder}/params.npz": npz_bytes(weights)})
    sae = load_sae(f"saelens://{release}/{sae_id}")
    _check_encode(sae, weights)
    cfg, state, _ = gemma_2_sae_huggingface_loader(repo_id, folder, device="cpu")  # sae-lens, same cache
    for key in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold"):
        assert torch.equal(getattr(sae, key).detach(), state[key]), key
    assert sae.cfg.metadata["hook_name"] == cfg["hook_name"] == "blocks.6.hook_resid_post"
    assert sae.cfg.metadata["model_name"] == f"google/{cfg['model_name']}"  # sae-lens names the TransformerLens id
    assert sae.cfg.metadata["hub_ref"] == f"hf://{repo_id}/{folder}"
    # The saelens:// reference and its hf:// form share one workspace (index.db, eval.json).
    assert resolve_sae_ref(f"saelens://{release}/{sae_id}") == resolve_sae_ref(f"hf://{repo_id}/{folder}")


def test_gemma_scope_2_release(hub):
    release = "gemma-scope-2-270m-pt-mlp"
    entry = get_pretrained_saes_directory()[release]
    sae_id = next(iter(entry.saes_map))
    repo_id, folder = get_repo_id_and_folder_name(release, sae_id)
    weights = random_weights(D_IN, D_SAE, seed=12)
    put_repo(hub, repo_id, {f"{folder}/params.safetensors": gemma_scope_2_bytes(weights)})
    sae = load_sae(f"saelens://{release}/{sae_id}")
    _check_encode(sae, weights)
    layer = int(folder.split("layer_")[1].split("_")[0])
    assert sae.cfg.metadata["hook_name"] == f"blocks.{layer}.hook_mlp_out"
    assert sae.cfg.metadata["model_name"] == entry.model  # the registry's Hugging Face id of the model


def test_saelens_format_release(hub):
    release = "gemma-3-1b-res-matryoshka-dc"
    entry = get_pretrained_saes_directory()[release]
    assert entry.conversion_func is None  # stored in SAELens' own folder format
    sae_id = next(iter(entry.saes_map))
    repo_id, folder = get_repo_id_and_folder_name(release, sae_id)
    weights = random_weights(D_IN, D_SAE, seed=13)
    meta = {"hook_name": "blocks.3.hook_resid_post"}  # no model_name: the registry's model fills it in
    put_repo(hub, repo_id, saelens_files(weights, folder, meta, apply_b_dec=False))
    sae = load_sae(f"saelens://{release}/{sae_id}")
    _check_encode(sae, weights)
    assert sae.cfg.metadata["hook_name"] == "blocks.3.hook_resid_post"
    assert sae.cfg.metadata["model_name"] == entry.model == "google/gemma-3-1b-pt"


@pytest.mark.parametrize("ref, message", [
    ("saelens://no-such-release/x", "sae-lens has no release 'no-such-release'"),
    ("saelens://gemma-scope-2b-pt-res-canonical/layer_99/width_16k/canonical", "has no SAE 'layer_99/"),
    ("saelens://gemma-scope-2b-pt-att-canonical/layer_0/width_16k/canonical", "attn.hook_z"),
    ("saelens://llama_scope_lxr_8x/l0r_8x", "converts release 'llama_scope_lxr_8x' with 'llama_scope'"),
])
def test_registry_errors(hub, ref, message):
    with pytest.raises(SAEFormatError, match=message):
        load_sae(ref)
