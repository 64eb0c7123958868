"""`hf://` SAE references (SPEC §9) against a Hub cache built in the test folder, offline (HF_HUB_OFFLINE=1).

Each layout loads exactly: weights equal to the files', latents equal to a float64 numpy JumpReLU; model and hook
come from the Gemma Scope repo name and path (or cfg.json); bad references and missing repos fail with one clear
SAEFormatError.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from app.sae import SAEFormatError, load_sae
from app.sae.hub import HUB_FILE, parse_ref, resolve_sae_ref, sae_metadata
from tests.sae.hub_support import (
    brute_force_encode,
    gemma_scope_2_bytes,
    npz_bytes,
    offline_hub,
    put_repo,
    random_weights,
    saelens_files,
)

D_IN, D_SAE = 16, 48
GS1 = "google/gemma-scope-2b-pt-res"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    return offline_hub(tmp_path, monkeypatch)


def _x(seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1.5, (40, D_IN)).astype(np.float32)


def _assert_exact(sae, weights, apply_b_dec: bool = False) -> None:
    for key in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold"):
        assert torch.equal(getattr(sae, key).detach(), torch.from_numpy(weights[key])), key
    x = _x()
    ours = sae.encode(torch.from_numpy(x)).detach().double().numpy()
    want = brute_force_encode(weights, x, apply_b_dec)
    assert 0 < (want > 0).sum() < want.size  # some latents fire, not all
    assert np.array_equal(ours > 0, want > 0)
    np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-5)


def test_gemma_scope_1_npz(hub):
    weights = random_weights(D_IN, D_SAE, seed=1)
    put_repo(hub, GS1, {"layer_3/width_16k/average_l0_12/params.npz": npz_bytes(weights),
                        "layer_5/width_16k/average_l0_12/params.npz": npz_bytes(random_weights(D_IN, D_SAE, 2))})
    ref = f"hf://{GS1}/layer_3/width_16k/average_l0_12"
    sae = load_sae(ref)
    _assert_exact(sae, weights)
    meta = sae.cfg.metadata
    assert meta["hook_name"] == "blocks.3.hook_resid_post" and meta["model_name"] == "google/gemma-2-2b"
    assert meta["hub_ref"] == ref
    # The workspace is a folder every command can use; resolving again gives the same one, and it loads alone.
    folder = resolve_sae_ref(ref)
    assert folder == resolve_sae_ref(ref + "/params.npz") and (folder / HUB_FILE).is_file()
    assert sae_metadata(folder)["hook_name"] == "blocks.3.hook_resid_post"
    _assert_exact(load_sae(folder), weights)
    other = load_sae(f"hf://{GS1}/layer_5/width_16k/average_l0_12")
    assert other.cfg.metadata["hook_name"] == "blocks.5.hook_resid_post"
    assert resolve_sae_ref(f"hf://{GS1}/layer_5/width_16k/average_l0_12") != folder


@pytest.mark.parametrize("apply_b_dec", [False, True])
def test_saelens_format_folder(hub, apply_b_dec):
    weights = random_weights(D_IN, D_SAE, seed=4)
    meta = {"model_name": "someone/tiny-lm", "hook_name": "blocks.2.hook_resid_pre", "context_size": 64}
    put_repo(hub, "someone/tiny-saes", saelens_files(weights, "blocks.2.hook_resid_pre", meta, apply_b_dec))
    sae = load_sae("hf://someone/tiny-saes/blocks.2.hook_resid_pre")
    _assert_exact(sae, weights, apply_b_dec)
    assert {k: sae.cfg.metadata[k] for k in meta} == meta


@pytest.mark.parametrize("group, kind", [("resid_post", "resid_post"), ("mlp_out_all", "mlp_out")])
@pytest.mark.parametrize("repo, model", [("google/gemma-scope-2-270m-pt", "google/gemma-3-270m"),
                                         ("google/gemma-scope-2-1b-it", "google/gemma-3-1b-it")])
def test_gemma_scope_2_folder(hub, group, kind, repo, model):
    weights = random_weights(D_IN, D_SAE, seed=5)
    path = f"{group}/layer_7_width_16k_l0_small"
    config = {"architecture": "jump_relu", "model_name": "gemma-v3-270m-pt"}
    put_repo(hub, repo, {f"{path}/params.safetensors": gemma_scope_2_bytes(weights),
                         f"{path}/config.json": json.dumps(config).encode()})
    sae = load_sae(f"hf://{repo}/{path}")
    _assert_exact(sae, weights)
    assert sae.cfg.metadata["hook_name"] == f"blocks.7.hook_{kind}" and sae.cfg.metadata["model_name"] == model


def test_query_says_what_the_files_do_not(hub):
    weights = random_weights(D_IN, D_SAE, seed=6)
    put_repo(hub, "someone/npz-saes", {"sae-a/params.npz": npz_bytes(weights)})
    with pytest.raises(SAEFormatError, match=r"cannot tell which hook point.*\?hook=blocks\.L"):
        load_sae("hf://someone/npz-saes/sae-a")
    sae = load_sae("hf://someone/npz-saes/sae-a?hook=blocks.1.hook_mlp_out&model=someone/lm")
    _assert_exact(sae, weights)
    assert sae.cfg.metadata["hook_name"] == "blocks.1.hook_mlp_out" and sae.cfg.metadata["model_name"] == "someone/lm"
    # The query also overrides what a Gemma Scope path implies.
    put_repo(hub, GS1, {"layer_3/width_16k/average_l0_12/params.npz": npz_bytes(weights)})
    sae = load_sae(f"hf://{GS1}/layer_3/width_16k/average_l0_12?model=/models/gemma-2-2b")
    assert sae.cfg.metadata["model_name"] == "/models/gemma-2-2b"


def test_path_mangled_by_pathlib_still_resolves(hub):
    """`Path("hf://o/r/p")` prints as hf:/o/r/p (JUMPSCOPE_SAES arrives as Paths): still a reference."""
    from pathlib import Path

    weights = random_weights(D_IN, D_SAE, seed=7)
    put_repo(hub, GS1, {"layer_1/width_16k/average_l0_9/params.npz": npz_bytes(weights)})
    _assert_exact(load_sae(Path(f"hf://{GS1}/layer_1/width_16k/average_l0_9")), weights)


def test_missing_repo_or_path_offline(hub):
    with pytest.raises(SAEFormatError, match=r"not in the Hugging Face cache.*HF_HUB_OFFLINE is set"):
        load_sae("hf://google/gemma-scope-9b-pt-res/layer_3/width_16k/average_l0_12")
    put_repo(hub, GS1, {"layer_3/width_16k/average_l0_12/params.npz": npz_bytes(random_weights(D_IN, D_SAE, 1))})
    with pytest.raises(SAEFormatError, match=r"has no folder 'layer_4/width_16k/average_l0_12'"):
        load_sae(f"hf://{GS1}/layer_4/width_16k/average_l0_12")
    put_repo(hub, "someone/odd", {"x/README.md": b"hello"})
    with pytest.raises(SAEFormatError, match=r"not an SAE folder \(have README.md\)"):
        load_sae("hf://someone/odd/x?hook=blocks.0.hook_resid_post")


@pytest.mark.parametrize("ref, message", [
    ("hf://", "expected hf://OWNER/REPO"),
    ("hf://google", "expected hf://OWNER/REPO"),
    ("hf://goo gle/repo/x", "not a valid OWNER/REPO/PATH"),
    ("hf://google/repo/../../etc", "not a valid OWNER/REPO/PATH"),
    ("hf://google/repo/x?layer=3", "the query may set hook and model"),
    ("hf://google/repo/x?hook=", "the query may set hook and model"),
    ("saelens://only-a-release", "expected saelens://RELEASE/SAE_ID"),
])
def test_malformed_references(hub, ref, message):
    with pytest.raises(SAEFormatError, match=message.replace("(", r"\(").replace("?", r"\?")):
        load_sae(ref)


@pytest.mark.parametrize("path, message", [
    ("google/gemma-scope-2b-pt-att/layer_3/width_16k/average_l0_12", "attn.hook_z"),
    ("google/gemma-scope-2b-pt-res/embedding/width_4k/average_l0_6", "hook_embed"),
    ("google/gemma-scope-2-4b-pt/attn_out/layer_17_width_16k_l0_big", "attn.hook_z"),
    ("google/gemma-scope-2-4b-pt/transcoder/layer_17_width_16k_l0_big", "not SAEs"),
])
def test_unhookable_gemma_scope_saes_are_refused_before_any_download(hub, path, message):
    with pytest.raises(SAEFormatError, match=message):
        load_sae(f"hf://{path}")


def test_revision_and_file_in_the_reference():
    hub_ref = parse_ref("hf://google/gemma-scope-2b-pt-res@v1.0/layer_3/width_16k/average_l0_12/params.npz")
    assert (hub_ref.repo_id, hub_ref.revision, hub_ref.path) == (GS1, "v1.0", "layer_3/width_16k/average_l0_12")
    assert hub_ref.text == "hf://google/gemma-scope-2b-pt-res@v1.0/layer_3/width_16k/average_l0_12"


def test_workspace_keeps_working_offline_from_the_pinned_commit(hub):
    """After resolving, the workspace loads from the recorded commit in the cache even when refs/main moves on."""
    weights = random_weights(D_IN, D_SAE, seed=8)
    put_repo(hub, GS1, {"layer_2/width_16k/average_l0_5/params.npz": npz_bytes(weights)})
    folder = resolve_sae_ref(f"hf://{GS1}/layer_2/width_16k/average_l0_5")
    put_repo(hub, GS1, {"other/README.md": b"new commit"}, commit="f" * 40)  # main now points elsewhere
    _assert_exact(load_sae(folder), weights)
    record = json.loads((folder / HUB_FILE).read_text())
    assert record["commit"] == "0123456789abcdef0123456789abcdef01234567" and record["layout"] == "gemma-scope-1"


def test_unwritable_workspace_is_a_clear_error(hub, tmp_path, monkeypatch):
    put_repo(hub, GS1, {"layer_2/width_16k/average_l0_5/params.npz": npz_bytes(random_weights(D_IN, D_SAE, 9))})
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("JUMPSCOPE_CACHE", str(blocker))
    with pytest.raises(SAEFormatError, match=r"cannot write .*hub\.json.*set JUMPSCOPE_CACHE"):
        load_sae(f"hf://{GS1}/layer_2/width_16k/average_l0_5")
