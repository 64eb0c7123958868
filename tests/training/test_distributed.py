"""Data-parallel training on 2 CPU processes (gloo, launched with torchrun) equals single-process training."""

from __future__ import annotations

import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

from app.cli import main
from app.training.activations import save_activation_file


def test_two_gloo_ranks_match_one_process(tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    data = save_activation_file(tmp_path / "acts.safetensors", torch.randn(600, 8, generator=g))
    args = ["train", "--activations", str(data), "--d-sae", "16", "--target-l0", "3", "--tokens", str(64 * 12),
            "--batch-size", "64", "--buffer-tokens", "256", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "single")]) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "app.cli", *args, "--out", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=os.getcwd())
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = load_file(str(tmp_path / "single" / "sae_weights.safetensors"))
    ddp = load_file(str(tmp_path / "ddp" / "sae_weights.safetensors"))
    for key in single:
        assert torch.allclose(single[key], ddp[key], rtol=1e-4, atol=1e-5), key
    assert (tmp_path / "ddp" / "metrics.jsonl").read_text().count("\n") == \
        (tmp_path / "single" / "metrics.jsonl").read_text().count("\n")
