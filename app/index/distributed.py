"""torchrun support: ranks index interleaved batches of the corpus and rank 0 merges their states.

Every rank streams the same corpus order and takes batches b with b % world == rank. At each commit point
all ranks have finished the same prefix of batches; rank 0 gathers the running states (latent chunk by
latent chunk, so memory stays bounded) and folds them with the same pure `merge` used everywhere else.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from app.index.config import IndexConfig
from app.index.state import IndexState, merge
from app.torchrun import join


def world(device: str | torch.device | None = None) -> tuple[int, int]:
    """(rank, world size), joining the torchrun job through the shared bootstrap (`app.torchrun.join`) when
    launched by torchrun and not joined yet (`jumpscope index` joins first, to place its models)."""
    if not dist.is_initialized():
        join(device)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def broadcast_float(value: float | None, src: int = 0) -> float | None:
    """Rank `src`'s value on every rank (None travels as NaN)."""
    if not dist.is_initialized():
        return value
    dev = torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([float("nan") if value is None else value], dtype=torch.float64, device=dev)
    dist.broadcast(t, src)
    v = float(t.item())
    return None if v != v else v


def gather_merged(state: IndexState, cfg: IndexConfig, chunk: int = 8192) -> IndexState | None:
    """On rank 0, the merge of every rank's state (others get None). All ranks must call it together."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return state
    rank, size = dist.get_rank(), dist.get_world_size()
    dev = torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")
    out = IndexState.empty(state.n, cfg, "cpu") if rank == 0 else None
    for lo in range(0, state.n, chunk):
        part = state.select(slice(lo, lo + chunk)).to(dev)
        gathered: dict[str, list[torch.Tensor]] = {}
        for name, t in part.tensors().items():
            t = t.contiguous()
            bufs = [torch.empty_like(t) for _ in range(size)] if rank == 0 else None
            dist.gather(t, bufs, dst=0)
            if rank == 0:
                gathered[name] = bufs
        if rank == 0:
            acc = IndexState(**{k: v[0] for k, v in gathered.items()})
            for r in range(1, size):
                acc = merge(acc, IndexState(**{k: v[r] for k, v in gathered.items()}), cfg)
            out.assign(slice(lo, lo + chunk), acc.to("cpu"))
    return out
