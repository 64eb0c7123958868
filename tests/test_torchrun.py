"""The shared torchrun bootstrap: a process without torchrun is placed alone on the asked device.

Joining a real process group is covered end to end by tests/training/test_distributed.py and
tests/index/test_distributed.py (2 gloo ranks under torchrun).
"""

from __future__ import annotations

import torch

from app.torchrun import Placement, join


def test_without_torchrun_a_single_process_on_the_device(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert join("cpu") == Placement(rank=0, world=1, device=torch.device("cpu"), owns_group=False)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert join("cpu").world == 1 and not torch.distributed.is_initialized()
