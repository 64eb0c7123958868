"""Atomic checkpoints that resume training exactly.

A checkpoint is a folder `<out>/checkpoints/step-00001234/` with
  state.safetensors  — SAE parameters + input_scale, Adam moments, RNG states, latent statistics
  state.json         — step, data position, controller state, optimiser hyper-parameters
  train_config.json  — the config of the run
written into a temporary sibling, fsynced, then renamed into place; older checkpoints beyond `keep` are
removed only after the new one is complete, so the previous checkpoint is always intact.
No pickle: tensors go to safetensors, everything else to JSON.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from app.fsio import fsync_dir, fsync_file

CHECKPOINTS = "checkpoints"
STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
_NAME = re.compile(r"^step-(\d{8,})$")


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser state_dict into tensors (for safetensors) and JSON (param groups, scalars)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {"param_groups": sd["param_groups"], "state_keys": {}}
    for idx, st in sd["state"].items():
        keys = []
        for name, value in st.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"optim.{idx}.{name}"] = t.detach().cpu().contiguous()
            keys.append(name)
        meta["state_keys"][str(idx)] = keys
    return tensors, meta


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Inverse of `optimizer_tensors`."""
    state = {
        int(idx): {name: tensors[f"optim.{idx}.{name}"] for name in names}
        for idx, names in meta["state_keys"].items()
    }
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_tensors() -> dict[str, torch.Tensor]:
    """Torch RNG states (CPU, and every CUDA device when present)."""
    out = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


def restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["rng.cpu"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


def save_checkpoint(
    out: str | os.PathLike,
    step: int,
    tensors: dict[str, torch.Tensor],
    state: dict[str, Any],
    config_json: str,
    keep: int = 2,
) -> Path:
    """Write checkpoint `step` atomically and prune all but the newest `keep` checkpoints."""
    root = Path(out) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / STATE_TENSORS))
        (tmp / STATE_JSON).write_text(json.dumps(state, indent=1, sort_keys=True))
        (tmp / "train_config.json").write_text(config_json)
        for f in tmp.iterdir():
            fsync_file(f)
        if final.exists():  # re-saving the same step after a resume: swap the old one out
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(out: str | os.PathLike) -> list[Path]:
    """Complete checkpoints in `out`, oldest first (temporary folders are ignored)."""
    root = Path(out) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name) and (p / STATE_JSON).exists()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    found = list_checkpoints(out)
    return found[-1] if found else None


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, state) of a checkpoint folder."""
    path = Path(path)
    try:
        tensors = load_file(str(path / STATE_TENSORS))
        state = json.loads((path / STATE_JSON).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable checkpoint ({e})") from None
    return tensors, state
