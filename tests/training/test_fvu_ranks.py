"""The training FVU of metrics.jsonl over 2 gloo ranks equals one process's FVU over the whole global batch.

Each rank's rows have a different mean, so a variance taken about each rank's own mean (the old per-rank
sum) gives a much smaller denominator than the variance about the global mean.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from app.training.distributed import DistContext
from app.training.trainer import _Interval

D, STEPS, LOCAL = 6, 3, 40


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Global batches [2·LOCAL, D] (rank r owns rows r·LOCAL … (r+1)·LOCAL) and their reconstructions."""
    g = torch.Generator().manual_seed(0)
    offset = torch.cat([torch.full((LOCAL, D), 4.0), torch.full((LOCAL, D), -3.0)])  # rank means differ
    out = []
    for _ in range(STEPS):
        x = torch.randn(2 * LOCAL, D, generator=g) + offset
        out.append((x, x + 0.7 * torch.randn(2 * LOCAL, D, generator=g)))
    return out


def _feed(interval: _Interval, rows: slice) -> None:
    for x, x_hat in _batches():
        x, x_hat = x[rows], x_hat[rows]
        out = SimpleNamespace(loss=torch.tensor(1.0), mse=(x - x_hat).pow(2).sum(-1).mean(), x_hat=x_hat)
        interval.add(out, x, 2.0)


def _rank(rank: int, folder: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2)
    try:
        interval = _Interval(d_sae=8)
        _feed(interval, slice(rank * LOCAL, (rank + 1) * LOCAL))
        rec = interval.flush(DistContext(rank=rank, world=2), D)
        (Path(folder) / f"rank{rank}.json").write_text(json.dumps(rec))
    finally:
        dist.destroy_process_group()


def test_two_ranks_fvu_equals_whole_batch(tmp_path) -> None:
    mp.start_processes(_rank, args=(str(tmp_path),), nprocs=2, start_method="fork", join=True)
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    x = torch.cat([b[0] for b in _batches()]).double()
    x_hat = torch.cat([b[1] for b in _batches()]).double()
    brute = float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    single = _Interval(d_sae=8)
    _feed(single, slice(None))
    one = single.flush(DistContext(), D)
    assert abs(one["fvu"] - brute) < 1e-9
    for rec in got:  # every rank logs the same global figure
        assert abs(rec["fvu"] - brute) < 1e-9
        assert abs(rec["mse"] - one["mse"]) < 1e-6
    # The per-rank-mean denominator would be far off here: the test data separates the two definitions.
    local_var = sum(float((x[s] - x[s].mean(0)).pow(2).sum()) for s in
                    (torch.arange(len(x)) // LOCAL % 2 == r for r in range(2)))
    assert float((x - x_hat).pow(2).sum()) / local_var > 1.5 * brute
