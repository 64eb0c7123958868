"""The machine's dense-matmul FLOP/s, the denominator of every `*_ratio` JumpScope's benchmarks report."""

from __future__ import annotations

import time

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def dense_matmul_flops(
    dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", n: int = 2048, repeats: int = 5
) -> float:
    """Best-of-`repeats` FLOP/s of an n×n @ n×n matmul in `dtype` on `device` (2·n³ FLOPs each)."""
    device = torch.device(device)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up (thread pools, cuBLAS handles)
    _sync(device)
    best = float("inf")
    inner = 10 if device.type == "cuda" else 1
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            a @ b
        _sync(device)
        best = min(best, (time.perf_counter() - t0) / inner)
    return 2 * n**3 / best


if __name__ == "__main__":
    import json

    print(json.dumps({"float32_cpu_flops_per_s": dense_matmul_flops()}))
