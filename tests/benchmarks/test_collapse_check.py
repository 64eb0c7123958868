"""benchmarks/collapse_check.py: its planted pool holds the directions it says, and the check finds each of them."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from app.sae import JumpReLUSAE, SAEConfig
from app.training.missing_directions import POOL_STEPS, POOL_TOP, missing_directions
from benchmarks.collapse_check import main, planted_pool


def test_the_check_finds_every_planted_direction_of_the_pool() -> None:
    pool = planted_pool(d_in=128, missing=16, seed=3)
    assert len(pool.residuals) == POOL_STEPS and all(len(r) == POOL_TOP for r in pool.residuals)
    sae = JumpReLUSAE(SAEConfig(d_in=128, d_sae=8))  # every latent moving: nothing is held
    found, _ = missing_directions(pool, sae, torch.arange(8), limit=100)
    g = torch.Generator().manual_seed(3)
    dirs = torch.nn.functional.normalize(torch.randn(16, 128, generator=g), dim=1)  # as planted_pool draws them
    cos = (found @ dirs.t()).abs()
    assert found.shape[0] == 16 and sorted(cos.argmax(1).tolist()) == list(range(16))
    assert float(cos.max(1).values.min()) > 0.97


def test_the_benchmark_prints_its_ratio(monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["collapse_check", "--d-in", "128", "--d-sae", "64", "--batch", "256",
                                      "--missing", "16", "--steps", "2"])
    main()
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["found"] == 16 and out["check_per_step"] > 0
    assert out["check_per_step"] == pytest.approx(out["check_s"] / out["step_s"], rel=0.05)
