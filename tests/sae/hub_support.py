"""A Hugging Face Hub cache built in a test folder: the real layout huggingface_hub reads offline.

    HF_HUB_CACHE/models--OWNER--REPO/refs/main            → the commit hash
    HF_HUB_CACHE/models--OWNER--REPO/blobs/<sha256>        → file contents
    HF_HUB_CACHE/models--OWNER--REPO/snapshots/<commit>/…  → relative symlinks into blobs/

(https://huggingface.co/docs/huggingface_hub/guides/manage-cache). `offline_hub` points huggingface_hub there with
HF_HUB_OFFLINE=1, so `snapshot_download` answers from the folder or fails as it would on a machine without network.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save as save_safetensors

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """For a fixture: an empty HF hub cache in tmp_path, HF_HUB_OFFLINE=1, JUMPSCOPE_CACHE in tmp_path."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-home" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("JUMPSCOPE_CACHE", str(tmp_path / "jumpscope"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # read at import; these are read per call
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def put_repo(cache: Path, repo_id: str, files: dict[str, bytes], commit: str = COMMIT) -> Path:
    """Write `files` (repo path → bytes) into the cache as commit `commit` of `repo_id` on branch main."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    for rel, data in files.items():
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = root / "snapshots" / commit / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return root / "snapshots" / commit


def random_weights(d_in: int, d_sae: int, seed: int) -> dict[str, np.ndarray]:
    """JumpReLU weights in Gemma Scope's orientation (W_enc [d_in, d_sae]) with θ > 0 and some latents firing."""
    rng = np.random.default_rng(seed)
    return {
        "W_enc": rng.normal(0, 1 / np.sqrt(d_in), (d_in, d_sae)).astype(np.float32),
        "W_dec": rng.normal(0, 1 / np.sqrt(d_sae), (d_sae, d_in)).astype(np.float32),
        "b_enc": rng.normal(0, 0.1, d_sae).astype(np.float32),
        "b_dec": rng.normal(0, 0.1, d_in).astype(np.float32),
        "threshold": rng.uniform(0.05, 0.6, d_sae).astype(np.float32),
    }


def npz_bytes(weights: dict[str, np.ndarray]) -> bytes:
    """A Gemma Scope 1 params.npz."""
    buf = io.BytesIO()
    np.savez(buf, **weights)
    return buf.getvalue()


def gemma_scope_2_bytes(weights: dict[str, np.ndarray]) -> bytes:
    """A Gemma Scope 2 params.safetensors (lower-case w_enc / w_dec)."""
    names = {"W_enc": "w_enc", "W_dec": "w_dec"}
    return save_safetensors({names.get(k, k): torch.from_numpy(v) for k, v in weights.items()})


def saelens_files(weights: dict[str, np.ndarray], folder: str, metadata: dict, apply_b_dec: bool) -> dict[str, bytes]:
    """cfg.json + sae_weights.safetensors of a SAELens-format folder (sae-lens ≥ 6 cfg keys)."""
    d_in, d_sae = weights["W_enc"].shape
    cfg = {"architecture": "jumprelu", "d_in": int(d_in), "d_sae": int(d_sae), "dtype": "float32",
           "device": "cpu", "apply_b_dec_to_input": apply_b_dec, "normalize_activations": "none",
           "reshape_activations": "none", "metadata": metadata}
    tensors = save_safetensors({k: torch.from_numpy(v) for k, v in weights.items()})
    return {f"{folder}/cfg.json": json.dumps(cfg).encode(), f"{folder}/sae_weights.safetensors": tensors}


def brute_force_encode(weights: dict[str, np.ndarray], x: np.ndarray, apply_b_dec: bool = False) -> np.ndarray:
    """JumpReLU in float64 numpy: pre = (x [− b_dec]) W_enc + b_enc; f = pre · [pre > θ]."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    xin = x.astype(np.float64) - (w["b_dec"] if apply_b_dec else 0.0)
    pre = xin @ w["W_enc"] + w["b_enc"]
    return pre * (pre > w["threshold"])
