"""Both directions against the real sae-lens package: JumpScope folders load in `SAE.load_from_disk` and
sae-lens folders (`save_model`) load in JumpScope, encoding and decoding the same; the SAELens-only fields
(normalize_activations, scaling_factor) mean what sae-lens does with them, or are refused.

Skipped only with JUMPSCOPE_NO_INTEROP=1 (the lowest-bounds environment has no sae-lens); anywhere else a
missing sae-lens fails the import below instead of skipping.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

if os.environ.get("JUMPSCOPE_NO_INTEROP") == "1":
    pytest.skip("JUMPSCOPE_NO_INTEROP=1: this environment has no sae-lens", allow_module_level=True)

from sae_lens import SAE, JumpReLUSAEConfig  # noqa: E402
from sae_lens import JumpReLUSAE as SaeLensJumpReLU  # noqa: E402
from sae_lens.saes.sae import SAEMetadata  # noqa: E402
from sae_lens.training.activation_scaler import ActivationScaler  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from app.sae import JumpReLUSAE, SAEFormatError, load_sae  # noqa: E402

D_IN, D_SAE = 12, 40
HOOK = "blocks.1.hook_resid_post"


def _inputs(dtype: torch.dtype = torch.float32, n: int = 64) -> torch.Tensor:
    return (torch.randn(n, D_IN, generator=torch.Generator().manual_seed(7)) * 2).to(dtype)


def _assert_same_sae(ours: JumpReLUSAE, theirs, x: torch.Tensor, scale: ActivationScaler | None = None) -> None:
    """Same active latents, same latent values and reconstructions (sae-lens wrapped in its scaler if given)."""
    scale = scale or ActivationScaler()
    with torch.no_grad():
        f_ours, f_theirs = ours.encode(x), theirs.encode(scale.scale(x))
        assert 0 < int((f_theirs != 0).sum()) < f_theirs.numel()  # some latents fire, not all: a real check
        assert torch.equal(f_ours != 0, f_theirs != 0)
        tol = dict(rtol=1e-5, atol=1e-5) if x.dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
        torch.testing.assert_close(f_ours, f_theirs, **tol)
        torch.testing.assert_close(ours.decode(f_theirs), scale.unscale(theirs.decode(f_theirs)), **tol)


# --- JumpScope writes, sae-lens reads -------------------------------------------------------------------
def _jumpscope_sae(apply_b_dec: bool, metadata: dict, dtype: str = "float32") -> JumpReLUSAE:
    sae = JumpReLUSAE.create(D_IN, D_SAE, threshold=0.5, seed=0, apply_b_dec_to_input=apply_b_dec,
                             metadata=metadata)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        sae.b_enc.copy_(torch.randn(D_SAE, generator=gen) * 0.3)
        sae.b_dec.copy_(torch.randn(D_IN, generator=gen))
        sae.log_threshold.add_(torch.randn(D_SAE, generator=gen) * 0.5)
        sae.input_scale.fill_(0.8)  # a pending training normalisation: save folds it
    return sae.to_dtype_device(dtype=dtype)


@pytest.mark.parametrize("apply_b_dec", [False, True])
@pytest.mark.parametrize("metadata", [{}, {"model_name": "tiny-lm", "hook_name": HOOK, "context_size": 32}],
                         ids=["trained-on-activation-files", "trained-on-a-model"])
def test_jumpscope_folder_loads_in_saelens(tmp_path, apply_b_dec, metadata):
    ours = _jumpscope_sae(apply_b_dec, metadata)
    ours.save(tmp_path / "ours")
    theirs = SAE.load_from_disk(tmp_path / "ours")
    assert isinstance(theirs, SaeLensJumpReLU)
    assert torch.equal(theirs.threshold, ours.threshold.detach())  # θ written exactly
    assert theirs.cfg.metadata.hook_name == metadata.get("hook_name")
    _assert_same_sae(ours, theirs, _inputs())
    # And back: what sae-lens saves of it loads in JumpScope as the same SAE, θ bit for bit.
    theirs.save_model(tmp_path / "back")
    again = load_sae(tmp_path / "back")
    assert torch.equal(again.threshold, ours.threshold.detach())
    _assert_same_sae(again, theirs, _inputs())


def test_bf16_jumpscope_folder_loads_in_saelens(tmp_path):
    ours = _jumpscope_sae(False, {"hook_name": HOOK}, dtype="bfloat16")
    ours.save(tmp_path / "ours")
    theirs = SAE.load_from_disk(tmp_path / "ours")
    assert theirs.dtype == torch.bfloat16 and torch.equal(theirs.threshold, ours.threshold.detach())
    _assert_same_sae(ours, theirs, _inputs(torch.bfloat16))


# --- sae-lens writes, JumpScope reads -------------------------------------------------------------------
def _saelens_sae(apply_b_dec: bool, dtype: str = "float32", normalize: str = "none") -> SaeLensJumpReLU:
    cfg = JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE, dtype=dtype, apply_b_dec_to_input=apply_b_dec,
                            normalize_activations=normalize,
                            metadata=SAEMetadata(model_name="tiny-lm", hook_name=HOOK, context_size=32))
    sae = SaeLensJumpReLU(cfg)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in (sae.W_enc, sae.W_dec):
            p.copy_(torch.randn(p.shape, generator=gen) / D_IN**0.5)
        sae.b_enc.copy_(torch.randn(D_SAE, generator=gen) * 0.3)
        sae.b_dec.copy_(torch.randn(D_IN, generator=gen))
        sae.threshold.copy_(torch.exp(torch.empty(D_SAE).uniform_(-3, 0.5, generator=gen)))
    return sae


@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_saelens_folder_loads_in_jumpscope(tmp_path, apply_b_dec):
    theirs = _saelens_sae(apply_b_dec)
    theirs.save_model(tmp_path / "theirs")
    ours = load_sae(tmp_path / "theirs")
    assert ours.cfg.apply_b_dec_to_input is apply_b_dec
    assert ours.cfg.metadata["hook_name"] == HOOK and ours.cfg.metadata["model_name"] == "tiny-lm"
    assert torch.equal(ours.threshold, theirs.threshold.detach())
    _assert_same_sae(ours, theirs, _inputs())


def test_saelens_folder_with_zero_thresholds_loads_in_jumpscope(tmp_path):
    """SAELens training clamps θ at 0 (such a latent is a plain ReLU): those folders load and encode the same."""
    theirs = _saelens_sae(False)
    with torch.no_grad():
        theirs.threshold[::4] = 0.0
    theirs.save_model(tmp_path / "theirs")
    ours = load_sae(tmp_path / "theirs")
    assert torch.equal(ours.threshold, theirs.threshold.detach())
    _assert_same_sae(ours, theirs, _inputs())
    ours.make_threshold_trainable()  # fine-tuning from it starts from a finite log θ
    assert torch.isfinite(ours.log_threshold).all()


def test_bf16_saelens_folder_keeps_its_thresholds(tmp_path):
    theirs = _saelens_sae(True, dtype="bfloat16")
    theirs.save_model(tmp_path / "theirs")
    stored = load_file(str(tmp_path / "theirs" / "sae_weights.safetensors"))["threshold"]
    assert stored.dtype == torch.bfloat16
    ours = load_sae(tmp_path / "theirs")
    assert torch.equal(ours.threshold, stored)
    assert torch.equal(load_sae(tmp_path / "theirs", dtype="float32").threshold, stored.float())
    _assert_same_sae(ours, SAE.load_from_disk(tmp_path / "theirs"), _inputs(torch.bfloat16))


def test_expected_average_only_in_uses_the_checkpoints_activation_scaler(tmp_path):
    """A sae-lens training checkpoint: weights for x·s, s in activation_scaler.json (its ActivationScaler)."""
    theirs = _saelens_sae(True, normalize="expected_average_only_in")
    theirs.save_model(tmp_path / "ckpt")
    scaler = ActivationScaler(scaling_factor=0.37)
    scaler.save(str(tmp_path / "ckpt" / "activation_scaler.json"))
    ours = load_sae(tmp_path / "ckpt")
    _assert_same_sae(ours, SAE.load_from_disk(tmp_path / "ckpt"), _inputs(), scale=scaler)
    # Saved natively, the scale is folded in and sae-lens reads raw activations like JumpScope does.
    ours.save(tmp_path / "folded")
    _assert_same_sae(ours, SAE.load_from_disk(tmp_path / "folded"), _inputs())


def test_expected_average_only_in_without_its_factor_is_refused(tmp_path):
    _saelens_sae(True, normalize="expected_average_only_in").save_model(tmp_path / "s")
    with pytest.raises(SAEFormatError, match="fold_activation_norm_scaling_factor"):
        load_sae(tmp_path / "s")


@pytest.mark.parametrize("normalize", ["layer_norm", "constant_norm_rescale"])
def test_per_token_normalisation_is_refused(tmp_path, normalize):
    _saelens_sae(True, normalize=normalize).save_model(tmp_path / "s")
    SAE.load_from_disk(tmp_path / "s")  # sae-lens applies it at run time; JumpScope says it does not
    with pytest.raises(SAEFormatError, match=f"normalize_activations='{normalize}' is not supported"):
        load_sae(tmp_path / "s")


def _add_scaling_factor(folder, factor: torch.Tensor, finetuning: bool) -> None:
    weights = load_file(str(folder / "sae_weights.safetensors"))
    save_file({**weights, "scaling_factor": factor}, str(folder / "sae_weights.safetensors"))
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps({**cfg, "finetuning_scaling_factor": finetuning}))


def test_unit_scaling_factor_is_a_no_op_like_in_saelens(tmp_path):
    theirs = _saelens_sae(True)
    theirs.save_model(tmp_path / "s")
    _add_scaling_factor(tmp_path / "s", torch.ones(D_SAE), finetuning=False)
    _assert_same_sae(load_sae(tmp_path / "s"), SAE.load_from_disk(tmp_path / "s"), _inputs())


@pytest.mark.parametrize("finetuning", [False, True])
def test_other_scaling_factors_are_refused_like_in_saelens(tmp_path, finetuning):
    _saelens_sae(True).save_model(tmp_path / "s")
    _add_scaling_factor(tmp_path / "s", torch.linspace(0.5, 2.0, D_SAE), finetuning=finetuning)
    with pytest.raises((ValueError, RuntimeError)):  # sae-lens >= 6 does not load it either
        SAE.load_from_disk(tmp_path / "s")
    with pytest.raises(SAEFormatError, match="scaling_factor"):
        load_sae(tmp_path / "s")
