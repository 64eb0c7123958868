"""What the SAELens-only fields of a cfg.json and sae_weights.safetensors mean, as sae-lens ≥ 6 reads them.

JumpScope reads the SAELens folder layout (cfg.json + sae_weights.safetensors). Most fields map one to one
(d_in, d_sae, dtype, apply_b_dec_to_input, metadata); the ones below change what the SAE computes, so each is
either given SAELens' meaning or refused with a message saying how to convert the SAE:

* `normalize_activations`
  - "none": the SAE reads raw activations.
  - "expected_average_only_in": the SAE was trained on x·s for a constant s that SAELens keeps *outside*
    the weights: in `activation_scaler.json` of a training checkpoint (its ActivationScaler multiplies the
    input by s and divides the reconstruction by s), or in its pretrained-SAE registry, folded in only by
    `SAE.from_pretrained`. A folder with activation_scaler.json is read with s as the input scale (exactly
    JumpScope's `input_scale`); without it s is unknown and the folder is refused.
  - "layer_norm", "constant_norm_rescale": per-token normalisation at run time; "covariance_whitening":
    a whitening SAELens folds in when training ends. Not supported: refused.
* `scaling_factor` tensor / `finetuning_scaling_factor`: a per-latent factor older SAELens multiplied the
  latents by before decoding. sae-lens ≥ 6 drops it when it is all ones and otherwise does not load the SAE;
  JumpScope does the same (the refusal says how to fold it into W_dec).
* `reshape_activations` = "hook_z": attention-head outputs flattened per head; refused (JumpScope hooks the
  residual stream, MLP and attention outputs).

Nothing here imports sae_lens.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from app.sae.errors import SAEFormatError

ACTIVATION_SCALER_FILE = "activation_scaler.json"  # SAELens training checkpoints keep the input scale here
LEGACY_TOP_LEVEL = ("model_name", "hook_name", "hook_layer", "context_size", "dataset_path", "prepend_bos")


def saelens_metadata(raw: dict[str, Any]) -> dict[str, Any]:
    """`metadata`, completed by the top-level fields older (pre-6.0) SAELens folders keep there."""
    meta = raw.get("metadata")
    meta = dict(meta) if isinstance(meta, dict) else {}
    for key in LEGACY_TOP_LEVEL:
        if raw.get(key) is not None and meta.get(key) is None:
            meta[key] = raw[key]
    return meta


def input_scale(raw: dict[str, Any], folder: Path) -> float:
    """The constant the SAE multiplies raw activations by before encoding (1.0: none), from normalize_activations."""
    mode = raw.get("normalize_activations", "none")
    if mode is True:  # pre-6.0 SAELens wrote a bool; true meant expected_average_only_in
        mode = "expected_average_only_in"
    if mode in (None, False, "", "none"):
        return 1.0
    if mode == "expected_average_only_in":
        return _scaler_factor(folder)
    raise SAEFormatError(
        f"{folder}: normalize_activations={mode!r} is not supported: JumpScope applies no per-token "
        "normalisation or whitening. Fold it into the weights in SAELens and save with normalize_activations='none'"
    )


def _scaler_factor(folder: Path) -> float:
    path = folder / ACTIVATION_SCALER_FILE
    if not path.is_file():
        raise SAEFormatError(
            f"{folder}: normalize_activations='expected_average_only_in' means the SAE reads activations times a "
            f"constant this folder does not store (no {ACTIVATION_SCALER_FILE}). Fold it in SAELens with "
            "sae.fold_activation_norm_scaling_factor(factor), then save_model (normalize_activations becomes 'none')"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SAEFormatError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise SAEFormatError(f"{path}: expected a JSON object")
    if data.get("has_whitening"):
        raise SAEFormatError(f"{path}: a whitening scaler is not supported; fold it into the weights in SAELens")
    factor = data.get("scaling_factor")
    if factor is None:
        return 1.0
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor) or factor <= 0:
        raise SAEFormatError(f"{path}: scaling_factor must be a positive number, got {factor!r}")
    return float(factor)


def drop_unit_scaling_factor(raw: dict[str, Any], tensors: dict[str, torch.Tensor], where: str) -> None:
    """Remove a `scaling_factor` tensor that is all ones (a no-op); refuse any other, as sae-lens ≥ 6 does."""
    factor = tensors.pop("scaling_factor", None)
    if factor is None or torch.allclose(factor.float(), torch.ones_like(factor, dtype=torch.float32)):
        return
    why = ("finetuning_scaling_factor is true: a per-latent factor on the latents before decoding, which "
           "sae-lens >= 6 does not load either" if raw.get("finetuning_scaling_factor")
           else "finetuning_scaling_factor is false, and SAELens refuses such a folder")
    raise SAEFormatError(
        f"{where}: has a scaling_factor tensor that is not all ones ({why}). Fold it into the decoder "
        "(W_dec[i] *= scaling_factor[i]), drop the tensor and save again"
    )


def check_reshape(raw: dict[str, Any], folder: Path) -> None:
    """Refuse SAELens' hook_z reshaping (per-head attention activations)."""
    mode = raw.get("reshape_activations", "none")
    if mode not in (None, "none"):
        raise SAEFormatError(f"{folder}: reshape_activations={mode!r} (per-head hook_z SAEs) is not supported")
