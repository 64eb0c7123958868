"""The shuffling mixing buffer: deterministic, resumable, and rank-aware.

Activations arrive in *blocks* (`BlockSource.block(k)`: a few hundred thousand tokens harvested from
consecutive contexts, or a slice of an activation file). Each block is shuffled with a permutation seeded by
(seed, k), and batches are consecutive slices of the concatenated shuffled blocks. Tokens that sit next to
each other in a context are therefore spread over many batches, and the whole stream is a pure function of
(seed, block index, offset) — a checkpoint stores just those two integers and resumes exactly.

Data parallel: all ranks walk the same global batches; each keeps only its own slice of every batch, and a
source may materialise only the rows its rank needs (`BlockSource.rows`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


class BlockSource(Protocol):
    """Where the buffer reads activations from."""

    d_in: int

    def block_size(self, k: int) -> int:
        """Number of tokens in block k (k counts on across epochs)."""
        ...

    def rows(self, k: int, index: torch.Tensor) -> torch.Tensor:
        """Rows `index` (positions within block k) as float32 [len(index), d_in]."""
        ...


@dataclass
class BufferState:
    """Position in the stream: the block being read and the next unread (shuffled) position in it."""

    block: int = 0
    offset: int = 0


def block_permutation(seed: int, k: int, n: int) -> torch.Tensor:
    """The shuffle of block k: a permutation of range(n) that depends only on (seed, k)."""
    gen = torch.Generator().manual_seed((seed * 1_000_003 + k) % (2**63 - 1))
    return torch.randperm(n, generator=gen)


class MixingBuffer:
    """Yields this rank's share of each global batch from block-shuffled activations."""

    def __init__(self, source: BlockSource, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1) -> None:
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} must be divisible by the number of ranks ({world})")
        self.source = source
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world = world
        self.state = BufferState()
        self._perm_block: int | None = None
        self._perm: torch.Tensor | None = None

    def _permutation(self, k: int) -> torch.Tensor:
        if self._perm_block != k:
            n = self.source.block_size(k)
            if n <= 0:
                raise ValueError(f"activation block {k} is empty")
            self._perm, self._perm_block = block_permutation(self.seed, k, n), k
        assert self._perm is not None
        return self._perm

    def next_batch(self) -> torch.Tensor:
        """This rank's rows of the next global batch: [batch_size // world, d_in]."""
        local = self.batch_size // self.world
        lo, hi = self.rank * local, (self.rank + 1) * local  # this rank's slice of the global batch
        parts: list[torch.Tensor] = []
        pos = 0  # position within the global batch
        while pos < self.batch_size:
            k, off = self.state.block, self.state.offset
            perm = self._permutation(k)
            take = min(self.batch_size - pos, len(perm) - off)
            a, b = max(lo, pos), min(hi, pos + take)  # overlap of this piece with our slice
            if a < b:
                parts.append(self.source.rows(k, perm[off + a - pos: off + b - pos]))
            pos += take
            if off + take >= len(perm):
                self.state = BufferState(k + 1, 0)
            else:
                self.state = BufferState(k, off + take)
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def state_dict(self) -> dict[str, int]:
        return {"block": self.state.block, "offset": self.state.offset}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.state = BufferState(int(state["block"]), int(state["offset"]))
