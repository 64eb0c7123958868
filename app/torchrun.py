"""The one torchrun bootstrap, shared by training (app.training.distributed) and indexing (app.index.distributed).

Under `torchrun --nproc_per_node N` every process finds RANK, WORLD_SIZE and LOCAL_RANK in its environment; `join`
turns them into a process group: NCCL with one GPU per local rank on CUDA, gloo on CPU. Without torchrun
(WORLD_SIZE unset or 1) it only resolves the device.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from app.runtime import resolve_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    """Where this process runs in the job."""

    rank: int
    world: int
    device: torch.device
    owns_group: bool  # True when `join` initialised the process group (the caller destroys it when done)


def join(device: str | torch.device | None = None) -> Placement:
    """Join the torchrun job described by the environment, or place a single process on `device` (auto: CUDA
    when present). On CUDA each rank takes the GPU of its LOCAL_RANK, so a job's ranks never share GPU 0."""
    dev = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Placement(rank=0, world=1, device=dev, owns_group=False)
    rank = int(os.environ.get("RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
        owns = True
    log.info("rank %d/%d on %s (%s)", rank, world, dev, backend)
    return Placement(rank=rank, world=world, device=dev, owns_group=owns)


def leave(owns_group: bool) -> None:
    """Destroy the process group `join` created (`owns_group`), once the job's last collective is done. Left to the
    interpreter's exit, gloo's threads can be torn down mid-flight and a rank aborts with "terminate called without
    an active exception" after its work succeeded."""
    if owns_group and dist.is_initialized():
        dist.destroy_process_group()
