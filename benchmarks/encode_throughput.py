"""SAE encode throughput (tokens/s) and its ratio to the machine's dense-matmul rate.

    .venv/bin/python -m benchmarks.encode_throughput --d-in 768 --d-sae 24576 --batch 1024 --steps 10

Encoding is one [B, d_in] @ [d_in, d_sae] matmul plus the JumpReLU mask, so the dense-matmul rate
(2·d_in·d_sae FLOPs per token) is its ceiling: `matmul_ratio` close to 1 means nothing else costs.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from app.runtime import resolve_device, resolve_dtype
from app.sae import JumpReLUSAE
from benchmarks.matmul_rate import dense_matmul_flops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d-in", type=int, default=768)
    ap.add_argument("--d-sae", type=int, default=24576)
    ap.add_argument("--batch", type=int, default=1024, help="tokens per encode call")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto", help="auto: bf16 on CUDA, float32 on CPU")
    args = ap.parse_args()

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    sae = JumpReLUSAE.create(args.d_in, args.d_sae, threshold=0.05, seed=0).to_dtype_device(dtype, device)
    x = torch.randn(args.batch, args.d_in, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        f = sae.encode(x)  # warm-up
        sync()
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            f = sae.encode(x)
            sync()
            times.append(time.perf_counter() - t0)
    best = min(times)
    median = sorted(times)[len(times) // 2]
    matmul = dense_matmul_flops(dtype, device)
    flops_per_token = 2 * args.d_in * args.d_sae
    print(json.dumps({
        "d_in": args.d_in, "d_sae": args.d_sae, "batch": args.batch, "device": str(device), "dtype": str(dtype),
        "tokens_per_s": round(args.batch / median),
        "tokens_per_s_best": round(args.batch / best),
        "flops_per_s": flops_per_token * args.batch / median,
        "dense_matmul_flops_per_s": matmul,
        "matmul_ratio": round(flops_per_token * args.batch / median / matmul, 3),
        "l0": float((f > 0).sum(-1).float().mean()),
    }))


if __name__ == "__main__":
    main()
