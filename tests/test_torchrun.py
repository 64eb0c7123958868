"""The shared torchrun bootstrap: a process without torchrun is placed alone on the asked device.

Joining a real process group is covered end to end by tests/training/test_distributed.py and
tests/index/test_distributed.py (2 gloo ranks under torchrun).
"""

from __future__ import annotations

import torch

from app.torchrun import Placement, join, leave


def test_without_torchrun_a_single_process_on_the_device(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert join("cpu") == Placement(rank=0, world=1, device=torch.device("cpu"), owns_group=False)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert join("cpu").world == 1 and not torch.distributed.is_initialized()


def test_leave_destroys_only_the_group_join_created(tmp_path):
    dist = torch.distributed
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        leave(False)  # a group someone else created (a caller that joined first) stays
        assert dist.is_initialized()
        leave(True)
        assert not dist.is_initialized()
        leave(True)  # nothing left to destroy: no error
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
