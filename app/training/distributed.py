"""Data-parallel plumbing over torch.distributed (torchrun): NCCL on GPU, gloo on CPU.

Gradients are averaged with one all-reduce of a flattened buffer per step (no DDP wrapper: the SAE uses
custom autograd functions and a decoder-gradient projection that must see the averaged gradient).
Without torchrun (WORLD_SIZE unset or 1) everything here is a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from app.torchrun import join, leave


@dataclass
class DistContext:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # True when we initialised the process group (and must destroy it)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """In-place sum over ranks (returns t)."""
        if self.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def all_reduce_max(self, t: torch.Tensor) -> torch.Tensor:
        """In-place maximum over ranks (returns t)."""
        if self.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t

    def all_reduce_floats(self, *values: float) -> list[float]:
        """Sum a few Python floats over ranks (float64)."""
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device)
        return self.all_reduce_sum(t).tolist()

    def all_reduce_tensor(self, t: torch.Tensor) -> torch.Tensor:
        """Sum of a float64 tensor over ranks, as a new CPU tensor (one all-reduce; the input is unchanged)."""
        buf = t.detach().to(device=self._comm_device, dtype=torch.float64).clone()
        return self.all_reduce_sum(buf).cpu()

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Replace each .grad by its mean over ranks (one flattened all-reduce)."""
        if not self.enabled:
            return
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world
        pos = 0
        for g in grads:
            g.copy_(flat[pos: pos + g.numel()].view_as(g))
            pos += g.numel()

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast_error(self, message: str | None) -> str | None:
        """Share the first rank's error message (or None) so every rank fails the same way."""
        if not self.enabled:
            return message
        box = [message]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    @property
    def _comm_device(self) -> torch.device:
        return self.device if dist.is_initialized() and dist.get_backend() == "nccl" else torch.device("cpu")

    def close(self) -> None:
        leave(self.owns_group)


def init_distributed(device: str | None = None) -> DistContext:
    """Join the torchrun job described by RANK/WORLD_SIZE/LOCAL_RANK (`app.torchrun.join`, the bootstrap the
    index shares), or return a single-process context."""
    p = join(device)
    return DistContext(rank=p.rank, world=p.world, device=p.device, owns_group=p.owns_group)
