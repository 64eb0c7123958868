"""The block-shuffling mixing buffer: coverage, shuffling, rank slices, exact state."""

from __future__ import annotations

import torch

from app.training.buffer import MixingBuffer


class _Rows:
    """A source whose row r of block k holds the global token id (k % n_blocks) * size + r."""

    def __init__(self, n: int, block: int) -> None:
        self.n, self.block, self.d_in = n, block, 1
        self.n_blocks = -(-n // block)

    def block_size(self, k: int) -> int:
        j = k % self.n_blocks
        return min(self.n, (j + 1) * self.block) - j * self.block

    def rows(self, k: int, index: torch.Tensor) -> torch.Tensor:
        j = k % self.n_blocks
        return (j * self.block + index).float().unsqueeze(1)


def _ids(buf: MixingBuffer, n_batches: int) -> list[int]:
    return [int(v) for _ in range(n_batches) for v in buf.next_batch().squeeze(1)]


def test_one_epoch_covers_every_row_once_and_is_shuffled() -> None:
    buf = MixingBuffer(_Rows(n=1000, block=300), batch_size=50, seed=3)
    ids = _ids(buf, 20)  # 1000 rows = one epoch; batches straddle block boundaries
    assert sorted(ids) == list(range(1000))
    assert ids[:300] != sorted(ids[:300])  # shuffled within the block
    assert sorted(ids[:300]) == list(range(300))  # but blocks are read in order
    other = _ids(MixingBuffer(_Rows(n=1000, block=300), batch_size=50, seed=4), 20)
    assert other != ids


def test_rank_slices_partition_the_global_batch() -> None:
    whole = MixingBuffer(_Rows(500, 128), batch_size=64, seed=1)
    ranks = [MixingBuffer(_Rows(500, 128), batch_size=64, seed=1, rank=r, world=2) for r in range(2)]
    for _ in range(12):
        g = whole.next_batch()
        parts = [b.next_batch() for b in ranks]
        assert parts[0].shape[0] == 32 and torch.equal(torch.cat(parts), g)


def test_state_dict_resumes_the_same_stream() -> None:
    a = MixingBuffer(_Rows(700, 256), batch_size=96, seed=9)
    _ids(a, 5)
    state = a.state_dict()
    rest = _ids(a, 6)
    b = MixingBuffer(_Rows(700, 256), batch_size=96, seed=9)
    b.load_state_dict(state)
    assert _ids(b, 6) == rest
