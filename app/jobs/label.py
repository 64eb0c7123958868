"""Write an activation-file job's LM, hook and layer into its SAE's cfg.json (metadata), so the app can serve it.

`jumpscope train --activations` does not know where the activations came from and records `hook_name: null`;
the job spec names them (required at submit), and the runner labels the SAE before registering it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def hook_name(hook: str, layer: int) -> str:
    """The TransformerLens-style name the SAE metadata uses: blocks.<layer>.hook_<kind>."""
    return f"blocks.{int(layer)}.hook_{hook}"


def label_sae(out_dir: str | Path, spec: dict[str, Any]) -> bool:
    """Set metadata model_name / hook_name / hook_layer in out_dir/cfg.json from an activation-file job's spec.

    Returns True when cfg.json was written; False for a corpus job (training recorded them itself) or a spec
    without a model (a record from before model/hook/layer were required). Writes atomically, keeping the mode.
    """
    if spec.get("activations") is None or not spec.get("model") or spec.get("hook") is None \
            or spec.get("layer") is None:
        return False
    path = Path(out_dir) / "cfg.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a JSON object")
    meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    meta.update(model_name=str(spec["model"]), hook_name=hook_name(spec["hook"], spec["layer"]),
                hook_layer=int(spec["layer"]))
    cfg["metadata"] = meta
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, path.stat().st_mode & 0o777)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(cfg, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return True
