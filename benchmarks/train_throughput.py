"""Throughput of full JumpReLU SAE training steps at a trained SAE's sparsity (issue 3, "Performance").

    python -m benchmarks.train_throughput --d-in 768 --d-sae 16384 --batch 4096 --steps 5 --l0 64

A step is everything a training step does (SPEC §2): forward, backward, removing the gradient component
parallel to each decoder row, grad-norm clipping, Adam (betas (0, 0.999)), renormalising decoder rows.
Thresholds are set per latent at the (1 − L0/d_sae) quantile of its pre-activations, so L0 ≈ --l0 and every
latent fires at the same rate, as in a trained SAE. Prints one JSON line:

  tokens_per_s           auto-dispatched training steps (sparse at this L0), median step time;
                         `*_best` from the fastest step
  dense_tokens_per_s     the dense reference path, same steps
  flops_per_s            dense-equivalent 12·d_in·d_sae FLOPs per token × tokens_per_s
  matmul_ratio           flops_per_s ÷ this machine's dense-matmul FLOP/s measured in the same run
  dense_matmul_ratio     the same for the dense path (against the matmul rates measured beside its steps)
  matmul_ratio_best      fastest step ÷ highest matmul rate seen
  l0                     measured mean L0 during the timed steps

With --frequency-coefficient F > 0 each step is the trainer's quadratic objective (target = --l0, one-sided) with
Gemma Scope 2's frequency penalty λ_f = F (app/training/objectives.py): the sparse path against the dense one
(the only path of the frequency penalty before 2026-12-04).

The matmul rate is measured right after every timed step and the median is used, so on a shared machine both
sides of the ratio see the same contention; still, run it a few times.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections.abc import Callable

import torch

from app.runtime import resolve_device, resolve_dtype
from app.sae.jumprelu import JumpReLUSAE
from app.training.objectives import quadratic_loss
from app.training.step import training_step
from benchmarks.matmul_rate import dense_matmul_flops

log = logging.getLogger(__name__)


def make_sae(d_in: int, d_sae: int, l0: float, device: torch.device, seed: int = 0) -> JumpReLUSAE:
    """A freshly initialised fp32 SAE whose per-latent thresholds give L0 ≈ `l0` on unit-variance inputs."""
    sae = JumpReLUSAE.create(d_in, d_sae, seed=seed, device=device)
    probe = _batch(4096, d_in, device, seed + 1)
    with torch.no_grad():
        pre = sae.pre_acts(probe)
        k = max(1, round(probe.shape[0] * l0 / d_sae))  # firing tokens per latent in the probe
        theta = pre.topk(k + 1, dim=0).values[-1].clamp_min(1e-6)
        sae.log_threshold.copy_(theta.log())
    return sae


def _batch(n: int, d_in: int, device: torch.device, seed: int) -> torch.Tensor:
    """Gaussian activations with E‖x‖² = 1 (the normalised units the SAE trains in)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return (torch.randn(n, d_in, generator=gen) / d_in**0.5).to(device)


def train_step(
    sae: JumpReLUSAE, opt: torch.optim.Optimizer, x: torch.Tensor, lam: float, sparse: bool | None,
    frequency: float = 0.0, target_l0: float = 64.0,
) -> torch.Tensor:
    """One SPEC §2 step exactly as the trainer runs it; returns the batch L0 (detached). With `frequency` > 0 the
    loss is the quadratic objective with the frequency penalty, on the path `sparse` asks for."""
    loss_fn = None
    if frequency > 0:
        def loss_fn(sae: JumpReLUSAE, x: torch.Tensor, lam: float):
            return quadratic_loss(sae, x, lam, target_l0, frequency, sparse=sparse, side="over")
    return training_step(sae, opt, x, lam, grad_clip=1.0, sparse=sparse, loss_fn=loss_fn).l0.detach()


def make_optimizer(sae: JumpReLUSAE, fused: bool) -> torch.optim.Adam:
    """SPEC §2 Adam; `fused` (one kernel per tensor, CPU and CUDA) is ~8× faster than the default on CPU."""
    return torch.optim.Adam(sae.parameters(), lr=7e-5, betas=(0.0, 0.999), eps=1e-8, fused=fused or None)


def time_steps(
    sae: JumpReLUSAE, batches: list[torch.Tensor], steps: int, sparse: bool | None, fused: bool,
    matmul: Callable[[], float], warmup: int = 1, frequency: float = 0.0, target_l0: float = 64.0,
) -> tuple[list[float], list[float], float]:
    """Per-step wall times of `steps` steps after `warmup` untimed ones, the matmul FLOP/s measured right
    after each (so both see the same contention on a shared machine), and the mean L0 over the steps."""
    opt = make_optimizer(sae, fused)
    times, rates, l0s = [], [], []
    for i in range(warmup + steps):
        x = batches[i % len(batches)]
        _sync(x.device)
        t0 = time.perf_counter()
        l0 = train_step(sae, opt, x, 1e-3, sparse, frequency, target_l0)
        _sync(x.device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            l0s.append(float(l0))
            rates.append(matmul())
    return times, rates, sum(l0s) / len(l0s)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args: argparse.Namespace) -> dict:
    """Measure and return the JSON-able result."""
    device = resolve_device(args.device)
    mm_dtype = resolve_dtype(args.matmul_dtype, device)
    batches = [_batch(args.batch, args.d_in, device, seed=10 + i) for i in range(2)]
    flop_per_token = 12 * args.d_in * args.d_sae

    def matmul() -> float:
        return dense_matmul_flops(mm_dtype, device, n=args.matmul_n, repeats=2)

    result: dict = {
        "d_in": args.d_in, "d_sae": args.d_sae, "batch": args.batch, "steps": args.steps,
        "target_l0": args.l0, "device": str(device), "threads": torch.get_num_threads(),
        "fused_adam": not args.no_fused_adam, "bf16": args.bf16, "frequency_coefficient": args.frequency_coefficient,
    }
    extra = {"frequency": args.frequency_coefficient, "target_l0": args.l0}
    fused = not args.no_fused_adam
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
        sae = make_sae(args.d_in, args.d_sae, args.l0, device)
        times, rates, l0 = time_steps(sae, batches, args.steps, None, fused, matmul, **extra)
        dense_times: list[float] = []
        dense_rates: list[float] = []
        if not args.skip_dense:
            sae = make_sae(args.d_in, args.d_sae, args.l0, device)
            dense_times, dense_rates, _ = time_steps(
                sae, batches, args.dense_steps or args.steps, False, fused, matmul, **extra
            )
    rate = statistics.median(rates)  # each path is divided by the rates measured beside its own steps

    def tps(ts: list[float], best: bool = False) -> float:
        return args.batch / (min(ts) if best else statistics.median(ts))

    result.update(
        l0=round(l0, 2),
        tokens_per_s=round(tps(times), 1),
        tokens_per_s_best=round(tps(times, best=True), 1),
        flops_per_s=tps(times) * flop_per_token,
        matmul_flops_per_s=rate,
        matmul_flops_per_s_max=max(rates),
        matmul_dtype=str(mm_dtype).removeprefix("torch."),
        matmul_ratio=round(tps(times) * flop_per_token / rate, 3),
        matmul_ratio_best=round(tps(times, best=True) * flop_per_token / max(rates), 3),
    )
    if dense_times:
        result.update(
            dense_tokens_per_s=round(tps(dense_times), 1),
            dense_matmul_flops_per_s=statistics.median(dense_rates),
            dense_matmul_ratio=round(tps(dense_times) * flop_per_token / statistics.median(dense_rates), 3),
            speedup_vs_dense=round(statistics.median(dense_times) / statistics.median(times), 2),
        )
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--d-in", type=int, default=768)
    p.add_argument("--d-sae", type=int, default=16384)
    p.add_argument("--batch", type=int, default=4096, help="tokens per step")
    p.add_argument("--steps", type=int, default=5, help="timed steps per path (after one warm-up step)")
    p.add_argument("--dense-steps", type=int, default=0, help="timed dense steps (default: --steps)")
    p.add_argument("--l0", type=float, default=64, help="target L0 the thresholds are set for")
    p.add_argument("--device", default="auto")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU runs; fp32 master weights)")
    p.add_argument("--matmul-dtype", default=None, help="dtype of the reference matmul (default: fp32 on CPU, "
                   "bf16 on CUDA)")
    p.add_argument("--matmul-n", type=int, default=2048, help="size of the reference n×n matmul")
    p.add_argument("--skip-dense", action="store_true", help="time only the sparse path")
    p.add_argument("--no-fused-adam", action="store_true", help="torch's default (for-loop) Adam instead")
    p.add_argument("--frequency-coefficient", type=float, default=0.0,
                   help="time the quadratic objective with this frequency penalty λ_f (0: the SAE's own loss)")
    args = p.parse_args(argv)
    if args.bf16 and args.matmul_dtype is None:
        args.matmul_dtype = "bfloat16"
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
