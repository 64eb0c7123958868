"""Bottom layer, shared by every part of JumpScope: device and dtype resolution, and the cache folder."""

from __future__ import annotations

import os
from pathlib import Path

import torch

# The one variable the core reads for its cache; the web Settings' `cache` field is the same JUMPSCOPE_CACHE.
CACHE_ENV = "JUMPSCOPE_CACHE"

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float64": torch.float64,
}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """`None`/"auto" picks CUDA when present, else CPU; anything else is passed to torch."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """`None`/"auto" is bf16 on CUDA and float32 on CPU; names like "bfloat16" or "fp32" are accepted."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return _DTYPES[dtype.removeprefix("torch.")]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}") from None


def dtype_name(dtype: torch.dtype) -> str:
    """"float32" for torch.float32, as SAELens writes it in cfg.json."""
    return str(dtype).removeprefix("torch.")


def cache_dir() -> Path:
    """JumpScope's cache folder: $JUMPSCOPE_CACHE, else ~/.cache/jumpscope.

    It holds the demo bundle, GGUF models converted for transformers (gguf/) and Hub SAE workspaces (hub/).
    `jumpscope serve` sets the variable from its settings, so the server, the core and job processes agree.
    """
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "jumpscope"
