"""Reading and writing SAEs (SPEC §6): native SAELens-compatible folders and Gemma Scope `params.npz`.

No pickle anywhere: safetensors, JSON, and `np.load(allow_pickle=False)`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from app.fsio import atomic_write_json, fsync_dir, fsync_file
from app.sae import hub
from app.sae.errors import SAEFormatError, brief
from app.sae.hub_layouts import GS2_WEIGHTS, load_gemma_scope_2
from app.sae.jumprelu import JumpReLUSAE, SAEConfig
from app.sae.saelens import check_reshape, drop_unit_scaling_factor, input_scale, saelens_metadata

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SPARSITY_FILE = "sparsity.safetensors"
GEMMA_SCOPE_FILE = "params.npz"
WEIGHT_KEYS = ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")
log = logging.getLogger(__name__)
__all__ = ["SAEFormatError", "load_sae", "load_sparsity", "save_native", "update_metadata"]


# --- writing ------------------------------------------------------------------------------------------
def save_native(sae: JumpReLUSAE, folder: str | os.PathLike, sparsity: torch.Tensor | None = None) -> Path:
    """Write cfg.json + sae_weights.safetensors (+ sparsity.safetensors) into `folder`, atomically.

    The SAE must take raw activations, so a pending input scale is folded into a copy of the weights.
    Files go to a temporary sibling folder that replaces `folder` with a rename, so a crash never
    leaves a half-written SAE. Other entries of an existing `folder` (metrics.jsonl, checkpoints/,
    eval.json, index.db, ...) are carried over as hard links, so saving into a training run's folder
    keeps its history.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    state = _raw_weights(sae)
    cfg = SAEConfig(**{**sae.cfg.__dict__, "metadata": dict(sae.cfg.metadata)})
    cfg.apply_b_dec_to_input = False
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp / WEIGHTS_FILE))
        if sparsity is not None:
            save_file({"sparsity": sparsity.detach().float().contiguous().cpu()}, str(tmp / SPARSITY_FILE))
        (tmp / CFG_FILE).write_text(cfg.dumps())
        for f in tmp.iterdir():
            fsync_file(f)
        _carry_over(folder, tmp)
        _replace_dir(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def update_metadata(folder: str | os.PathLike, changes: dict[str, Any]) -> None:
    """Set keys of cfg.json's `metadata` in an SAE folder (atomically); the weights are not touched."""
    path = Path(folder) / CFG_FILE
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SAEFormatError(f"{path}: cannot update metadata ({e})") from None
    if not isinstance(raw, dict):
        raise SAEFormatError(f"{path}: expected a JSON object")
    meta = raw.get("metadata")
    raw["metadata"] = {**(meta if isinstance(meta, dict) else {}), **changes}
    atomic_write_json(path, raw)


def _raw_weights(sae: JumpReLUSAE) -> dict[str, torch.Tensor]:
    """Weights that take raw activations (input scale and b_dec-on-input folded), without touching `sae`."""
    with torch.no_grad():
        s = sae.input_scale
        b_enc = sae.b_enc
        if sae.cfg.apply_b_dec_to_input:
            b_enc = b_enc - sae.b_dec @ sae.W_enc
        return {
            "W_enc": sae.W_enc * s,
            "W_dec": sae.W_dec / s,
            "b_enc": b_enc,
            "b_dec": sae.b_dec / s,
            "threshold": sae.threshold,
        }


def _carry_over(folder: Path, tmp: Path) -> None:
    """Hard-link every non-SAE entry of an existing `folder` into `tmp` (a copy where links are refused)."""
    if not folder.is_dir():
        return
    sae_files = {CFG_FILE, WEIGHTS_FILE, SPARSITY_FILE, hub.HUB_FILE}  # a saved SAE replaces a Hub SAE's record
    for entry in folder.iterdir():
        if entry.name in sae_files or entry.is_symlink():
            continue
        target = tmp / entry.name
        if entry.is_dir():
            shutil.copytree(entry, target, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, target)


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _replace_dir(tmp: Path, folder: Path) -> None:
    """Move `tmp` into place as `folder`; an existing folder is swapped out then removed."""
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)  # left by an earlier interrupted save of this process
        os.rename(folder, old)
        try:
            os.rename(tmp, folder)
        except BaseException:
            os.rename(old, folder)  # put the previous SAE back
            raise
        fsync_dir(folder.parent)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, folder)
        fsync_dir(folder.parent)


def _previous_copy(folder: Path) -> Path | None:
    """The previous SAE a save_native killed between its two renames left at `.NAME.old-PID`, if any."""
    if not folder.parent.is_dir():
        return None
    prefix = f".{folder.name}.old-"
    olds = sorted((p for p in folder.parent.iterdir() if p.name.startswith(prefix)), key=lambda p: p.stat().st_mtime)
    return olds[-1] if olds and (olds[-1] / CFG_FILE).is_file() else None


# --- reading ------------------------------------------------------------------------------------------
def load_sae(
    path: str | os.PathLike, device: torch.device | str | None = None, dtype: str | None = None
) -> JumpReLUSAE:
    """Load a JumpReLU SAE from a native/SAELens folder, a Gemma Scope `params.npz`, a folder holding one, a Gemma
    Scope 2 folder (params.safetensors), or a Hub reference `hf://…` / `saelens://…` (app.sae.hub)."""
    p = hub.resolve_sae_ref(path)
    if not p.exists() and (prev := _previous_copy(p)) is not None:
        log.warning("%s is missing: loading %s, left by an interrupted save", p, prev)
        p = prev
    if not p.exists():
        raise SAEFormatError(f"{p}: no such file or folder")
    try:
        if p.is_dir():
            if (p / hub.HUB_FILE).exists():
                sae = hub.load_workspace(p)
            elif (p / CFG_FILE).exists():
                sae = load_native(p)
            elif (p / GEMMA_SCOPE_FILE).exists():
                sae = load_gemma_scope(p / GEMMA_SCOPE_FILE)
            elif (p / GS2_WEIGHTS).exists():
                sae = load_gemma_scope_2(p)
            else:
                raise SAEFormatError(f"{p}: expected {CFG_FILE} + {WEIGHTS_FILE}, {GEMMA_SCOPE_FILE} or {GS2_WEIGHTS}")
        elif p.suffix == ".npz":
            sae = load_gemma_scope(p)
        else:
            raise SAEFormatError(f"{p}: not an SAE folder or a .npz file")
    except SAEFormatError:
        raise
    except (ValueError, TypeError, KeyError, OSError, RecursionError, MemoryError, RuntimeError) as e:
        # Any other way a damaged or hostile file fails is still "this SAE cannot be read" (the server
        # reports it and keeps serving the other SAEs); MemoryError = a header claiming a huge array.
        raise SAEFormatError(f"{p}: not a readable JumpReLU SAE ({type(e).__name__}: {str(e)[:300]})") from None
    sae.eval()
    return sae.to_dtype_device(dtype=dtype, device=device)


def load_native(folder: Path) -> JumpReLUSAE:
    try:
        raw = json.loads((folder / CFG_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SAEFormatError(f"{folder / CFG_FILE}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise SAEFormatError(f"{folder / CFG_FILE}: expected a JSON object")
    arch = str(raw.get("architecture", "jumprelu")).lower()
    if arch != "jumprelu":
        raise SAEFormatError(f"{folder}: architecture {arch!r} is not supported; JumpScope reads 'jumprelu' SAEs")
    weights_path = folder / WEIGHTS_FILE
    if not weights_path.exists():
        raise SAEFormatError(f"{folder}: missing {WEIGHTS_FILE}")
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise SAEFormatError(f"{weights_path}: unreadable or truncated safetensors file ({brief(e)})") from None
    if "threshold" not in tensors and "log_threshold" in tensors:
        tensors["threshold"] = tensors.pop("log_threshold").exp()  # θ fixed once, then stored as is
    check_reshape(raw, folder)
    drop_unit_scaling_factor(raw, tensors, str(weights_path))
    scale = input_scale(raw, folder)
    d_in, d_sae = _int_field(raw, "d_in", folder), _int_field(raw, "d_sae", folder)
    cfg = SAEConfig(
        d_in=d_in,
        d_sae=d_sae,
        dtype=str(raw.get("dtype", "float32")).removeprefix("torch."),
        bandwidth=float(raw.get("bandwidth", 0.001)),
        # SAELens' own default is true: absent means "encode x − b_dec".
        apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", True)),
        metadata=saelens_metadata(raw),
    )
    sae = from_tensors(cfg, tensors, str(weights_path))
    sae.input_scale.fill_(scale)
    return sae


def _int_field(raw: dict, key: str, where: Path) -> int:
    try:
        return int(raw[key])
    except KeyError:
        raise SAEFormatError(f"{where / CFG_FILE}: missing {key!r}") from None
    except (TypeError, ValueError):
        raise SAEFormatError(f"{where / CFG_FILE}: {key!r} must be an integer, got {raw[key]!r}") from None


def load_gemma_scope(path: Path) -> JumpReLUSAE:
    """Gemma Scope params.npz: raw activations in, JumpReLU as (pre > θ)·relu(pre) (θ > 0, so the same)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise SAEFormatError(f"{path}: unreadable or truncated .npz file ({brief(e)})") from None
    missing = [k for k in WEIGHT_KEYS if k not in arrays]
    if missing:
        raise SAEFormatError(f"{path}: missing {', '.join(missing)} (have {', '.join(sorted(arrays))})")
    if arrays["W_enc"].ndim != 2:
        raise SAEFormatError(f"{path}: W_enc must be 2-D [d_model, d_sae], got shape {arrays['W_enc'].shape}")
    odd = [f"{k} ({arrays[k].dtype})" for k in WEIGHT_KEYS if arrays[k].dtype.kind not in "biuf"]
    if odd:
        raise SAEFormatError(f"{path}: expected numeric arrays, got {', '.join(odd)}")
    d_in, d_sae = arrays["W_enc"].shape
    tensors = {k: torch.from_numpy(np.ascontiguousarray(arrays[k])).float() for k in WEIGHT_KEYS}
    cfg = SAEConfig(d_in=int(d_in), d_sae=int(d_sae), dtype="float32", metadata={"source": "gemma-scope"})
    return from_tensors(cfg, tensors, str(path))


def from_tensors(cfg: SAEConfig, tensors: dict[str, torch.Tensor], where: str) -> JumpReLUSAE:
    """A JumpReLUSAE from W_enc/W_dec/b_enc/b_dec/threshold, after shape, finiteness and θ ≥ 0 checks."""
    shapes = {
        "W_enc": (cfg.d_in, cfg.d_sae),
        "W_dec": (cfg.d_sae, cfg.d_in),
        "b_enc": (cfg.d_sae,),
        "b_dec": (cfg.d_in,),
        "threshold": (cfg.d_sae,),
    }
    for key, shape in shapes.items():
        if key not in tensors:
            raise SAEFormatError(f"{where}: missing tensor {key!r}")
        if tuple(tensors[key].shape) != shape:
            raise SAEFormatError(f"{where}: {key} has shape {tuple(tensors[key].shape)}, expected {shape}")
        if not torch.isfinite(tensors[key].float()).all():
            raise SAEFormatError(f"{where}: {key} contains NaN or Inf")
    if (tensors["threshold"] < 0).any():  # θ = 0 (a plain ReLU latent) is what SAELens training may leave
        raise SAEFormatError(f"{where}: threshold must be ≥ 0 for every latent")
    sae = JumpReLUSAE(cfg)
    with torch.no_grad():
        for key in ("W_enc", "W_dec", "b_enc", "b_dec"):
            getattr(sae, key).copy_(tensors[key])
    sae.set_threshold(tensors["threshold"])  # exactly as stored: encode tests pre > θ with these values
    return sae


def load_sparsity(folder: str | os.PathLike) -> torch.Tensor | None:
    """log10 density per latent from sparsity.safetensors, or None when the folder has none."""
    path = Path(folder) / SPARSITY_FILE
    if not path.exists():
        return None
    try:
        return load_file(str(path))["sparsity"]
    except (SafetensorError, OSError, KeyError) as e:
        raise SAEFormatError(f"{path}: unreadable sparsity file ({brief(e)})") from None
