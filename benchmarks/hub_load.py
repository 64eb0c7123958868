"""What an `hf://` reference costs per load once cached, against loading the same params.npz by path.

    .venv/bin/python -m benchmarks.hub_load [--d-in 1024 --d-sae 4096 --repeats 7]

A Gemma Scope 1-shaped repo is written into an HF cache in a temporary folder (the layout huggingface_hub reads,
tests/sae/hub_support.py) and read with HF_HUB_OFFLINE=1. Measured in the same run, medians of --repeats:
`load_sae(path/params.npz)` (the floor), `load_sae("hf://…")` (offline snapshot lookup + hub.json + the same read),
and `load_sae(workspace folder)` (what `serve` does after resolving). Target: ratio ≤ 1.2 for both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

TARGET = 1.2
REPO, PATH = "google/gemma-scope-2b-pt-res", "layer_4/width_4k/average_l0_50"


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(d_in: int, d_sae: int, repeats: int) -> dict:
    """Medians and ratios of the three loads for one SAE size."""
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "hub"
        os.environ.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), JUMPSCOPE_CACHE=str(Path(tmp) / "js"))
        from huggingface_hub import constants

        constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE = str(cache), True
        from app.sae import load_sae
        from app.sae.hub import resolve_sae_ref
        from tests.sae.hub_support import npz_bytes, put_repo, random_weights

        snapshot = put_repo(cache, REPO, {f"{PATH}/params.npz": npz_bytes(random_weights(d_in, d_sae, seed=0))})
        ref = f"hf://{REPO}/{PATH}"
        workspace = resolve_sae_ref(ref)
        floor = _median_seconds(lambda: load_sae(snapshot / PATH / "params.npz"), repeats)
        by_ref = _median_seconds(lambda: load_sae(ref), repeats)
        by_workspace = _median_seconds(lambda: load_sae(workspace), repeats)
    return {"d_in": d_in, "d_sae": d_sae, "floor_s": round(floor, 4), "hf_ref_s": round(by_ref, 4),
            "workspace_s": round(by_workspace, 4), "ratio_hf_ref": round(by_ref / floor, 3),
            "ratio_workspace": round(by_workspace / floor, 3), "target": TARGET}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--d-in", type=int, default=1024)
    p.add_argument("--d-sae", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    print(json.dumps(run(args.d_in, args.d_sae, args.repeats)))


if __name__ == "__main__":
    main()
