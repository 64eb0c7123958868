"""SAE file formats (SPEC §6): native round trip, SAELens folders, Gemma Scope npz, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from app.sae import JumpReLUSAE, SAEFormatError, load_sae, load_sparsity


def _random_sae(d_in=8, d_sae=16, **cfg) -> JumpReLUSAE:
    sae = JumpReLUSAE.create(d_in, d_sae, threshold=0.1, seed=0, **cfg)
    with torch.no_grad():
        for p in (sae.b_enc, sae.b_dec, sae.log_threshold):
            p.add_(torch.randn_like(p) * 0.1)
    return sae


def test_native_round_trip_is_exact(tmp_path):
    sae = _random_sae(metadata={"model_name": "tiny", "hook_name": "blocks.1.hook_resid_post", "context_size": 64})
    sparsity = torch.log10(torch.rand(16))
    sae.save(tmp_path / "sae", sparsity=sparsity)
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu" and cfg["apply_b_dec_to_input"] is False
    assert cfg["normalize_activations"] == "none" and cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_post"
    back = load_sae(tmp_path / "sae")
    for name in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold"):
        assert torch.equal(getattr(back, name), getattr(sae, name)), name
    assert torch.equal(load_sparsity(tmp_path / "sae"), sparsity)
    assert back.cfg.metadata["model_name"] == "tiny"


def test_save_folds_pending_input_scale(tmp_path):
    sae = _random_sae()
    with torch.no_grad():
        sae.input_scale.fill_(0.5)
    x = torch.randn(6, 8)
    sae.save(tmp_path / "s")
    back = load_sae(tmp_path / "s")
    assert back.input_scale.item() == 1.0
    assert torch.allclose(back.encode(x), sae.encode(x), atol=1e-6)
    assert torch.allclose(back.decode(back.encode(x)), sae.decode(sae.encode(x)), atol=1e-5)


def test_save_replaces_the_sae_and_keeps_other_files(tmp_path):
    _random_sae().save(tmp_path / "s", sparsity=torch.zeros(16))
    (tmp_path / "s" / "metrics.jsonl").write_text('{"step": 1}\n')
    (tmp_path / "s" / "checkpoints").mkdir()
    (tmp_path / "s" / "checkpoints" / "step-1.safetensors").write_bytes(b"ckpt")
    _random_sae(d_sae=32).save(tmp_path / "s")
    assert load_sae(tmp_path / "s").d_sae == 32
    assert not (tmp_path / "s" / "sparsity.safetensors").exists()  # SAE files are replaced as a set
    assert (tmp_path / "s" / "metrics.jsonl").read_text() == '{"step": 1}\n'  # a run's history stays
    assert (tmp_path / "s" / "checkpoints" / "step-1.safetensors").read_bytes() == b"ckpt"
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no temp folders left behind


def _saelens_folder(folder, sae: JumpReLUSAE, **cfg_overrides):
    folder.mkdir()
    cfg = {"architecture": "jumprelu", "d_in": sae.d_in, "d_sae": sae.d_sae, "dtype": "float32",
           "model_name": "gpt2", "hook_name": "blocks.3.hook_resid_post", **cfg_overrides}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file({k: getattr(sae, k).detach().contiguous() for k in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")},
              str(folder / "sae_weights.safetensors"))


def test_saelens_folder_defaults_to_apply_b_dec_to_input(tmp_path):
    sae = _random_sae()
    _saelens_folder(tmp_path / "sl", sae)  # no apply_b_dec_to_input key: SAELens' default is true
    back = load_sae(tmp_path / "sl")
    x = torch.randn(5, 8)
    assert back.cfg.apply_b_dec_to_input is True
    assert torch.allclose(back.pre_acts(x), (x - sae.b_dec) @ sae.W_enc + sae.b_enc, atol=1e-6)
    assert back.cfg.metadata["hook_name"] == "blocks.3.hook_resid_post"  # top-level fields → metadata
    back.save(tmp_path / "native")  # re-saving natively folds b_dec into b_enc
    again = load_sae(tmp_path / "native")
    assert again.cfg.apply_b_dec_to_input is False
    assert torch.allclose(again.pre_acts(x), back.pre_acts(x), atol=1e-5)


def test_gemma_scope_npz_loads(tmp_path):
    rng = np.random.default_rng(0)
    f32 = np.float32
    params = {"W_enc": rng.normal(size=(8, 16)).astype(f32), "W_dec": rng.normal(size=(16, 8)).astype(f32),
              "b_enc": rng.normal(size=16).astype(f32), "b_dec": rng.normal(size=8).astype(f32),
              "threshold": rng.uniform(0.1, 0.5, size=16).astype(f32)}
    np.savez(tmp_path / "params.npz", **params)
    for path in (tmp_path / "params.npz", tmp_path):
        sae = load_sae(path)
        x = rng.normal(size=(5, 8)).astype(np.float32)
        pre = x @ params["W_enc"] + params["b_enc"]
        ref = (pre > params["threshold"]) * np.maximum(pre, 0)  # Gemma Scope's own definition
        np.testing.assert_allclose(sae.encode(torch.from_numpy(x)).detach().numpy(), ref, rtol=1e-5, atol=1e-5)


def test_errors_are_clear(tmp_path):
    sae = _random_sae()
    with pytest.raises(SAEFormatError, match="no such"):
        load_sae(tmp_path / "missing")
    _saelens_folder(tmp_path / "topk", sae, architecture="topk")
    with pytest.raises(SAEFormatError, match="architecture 'topk'"):
        load_sae(tmp_path / "topk")
    _saelens_folder(tmp_path / "shape", sae, d_in=9)
    with pytest.raises(SAEFormatError, match="shape"):
        load_sae(tmp_path / "shape")
    sae.save(tmp_path / "trunc")
    w = tmp_path / "trunc" / "sae_weights.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(SAEFormatError, match="truncated"):
        load_sae(tmp_path / "trunc")
    sae.save(tmp_path / "nokey")
    weights = {k: getattr(sae, k).detach().contiguous() for k in ("W_enc", "W_dec", "b_enc", "b_dec")}
    save_file(weights, str(tmp_path / "nokey" / "sae_weights.safetensors"))
    with pytest.raises(SAEFormatError, match="missing tensor 'threshold'"):
        load_sae(tmp_path / "nokey")
    np.savez(tmp_path / "bad.npz", W_enc=np.zeros((4, 4)))
    with pytest.raises(SAEFormatError, match="missing"):
        load_sae(tmp_path / "bad.npz")
    (tmp_path / "trunc.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(SAEFormatError, match="unreadable"):
        load_sae(tmp_path / "trunc.npz")
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "cfg.json").write_text("{not json")
    with pytest.raises(SAEFormatError, match="JSON"):
        load_sae(tmp_path / "json")


def test_npz_with_object_arrays_is_refused(tmp_path):
    np.savez(tmp_path / "evil.npz", W_enc=np.array([{"a": 1}], dtype=object))
    with pytest.raises(SAEFormatError):
        load_sae(tmp_path / "evil.npz")
