"""What the collapse check (--collapse-share, app/training/missing_directions.py) costs against training steps.

    python -m benchmarks.collapse_check [--d-in 256] [--d-sae 4096] [--batch 4096] [--missing 600]

A check clusters a full pool (POOL_STEPS × POOL_TOP residuals) and gates its centres against the decoder; the pool
here is planted: `--missing` directions no latent holds, each behind POOL_STEPS·POOL_TOP / (4 · missing) residuals
(a·d_k plus an error of half its norm), among as many residuals that scatter. The check runs once every
--split-every (64) steps, and only while some latent is collapsed; pooling is a top-k of each step's errors over
the 16 steps before it. Prints one JSON line: `check_s`, `step_s` (a training step at the same sizes, median of
--steps), `check_per_step` (check_s ÷ step_s) and `overhead` (check_s ÷ (64 · step_s), the share of a run's time
while checks act), all measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from app.training.missing_directions import POOL_STEPS, POOL_TOP, ResidualPool, missing_directions
from app.training.optim import ThresholdAdam
from app.training.step import training_step
from benchmarks.train_throughput import make_sae


def planted_pool(d_in: int, missing: int, seed: int = 0) -> ResidualPool:
    """A full pool: a quarter of the residuals along `missing` planted directions, the rest scattered."""
    g = torch.Generator().manual_seed(seed)
    n = POOL_STEPS * POOL_TOP
    dirs = torch.nn.functional.normalize(torch.randn(missing, d_in, generator=g), dim=1)
    along = n // 4
    noise = torch.nn.functional.normalize(torch.randn(n, d_in, generator=g), dim=1)
    a = 1.0 + torch.rand(along, 1, generator=g)
    rows = torch.cat([a * dirs[torch.arange(along) % missing] + 0.5 * a * noise[:along], 1.5 * noise[along:]])
    pool = ResidualPool()
    pool.residuals = list(rows[torch.randperm(n, generator=g)].split(POOL_TOP))
    pool.inputs = [r + 0.1 for r in pool.residuals]
    return pool


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-in", type=int, default=256)
    ap.add_argument("--d-sae", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--missing", type=int, default=600)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sae = make_sae(args.d_in, args.d_sae, 10.0, torch.device("cpu"))
    opt = ThresholdAdam([{"params": list(sae.parameters())}], lr=1e-4)
    x = torch.randn(args.batch, args.d_in, generator=torch.Generator().manual_seed(1)) / args.d_in ** 0.5
    times = []
    for _ in range(args.steps + 1):
        t = time.perf_counter()
        training_step(sae, opt, x, 1e-3)
        times.append(time.perf_counter() - t)
    step_s = statistics.median(times[1:])
    pool = planted_pool(args.d_in, args.missing)
    moving = torch.arange(args.d_sae // 4)  # a quarter of the latents collapsed, as on planted s16n
    t = time.perf_counter()
    found, _ = missing_directions(pool, sae, moving, limit=moving.numel())
    check_s = time.perf_counter() - t
    print(json.dumps({"d_in": args.d_in, "d_sae": args.d_sae, "batch": args.batch, "found": int(found.shape[0]),
                      "check_s": round(check_s, 4), "step_s": round(step_s, 4),
                      "check_per_step": round(check_s / step_s, 3), "overhead": round(check_s / (64 * step_s), 4)}))


if __name__ == "__main__":
    main()
