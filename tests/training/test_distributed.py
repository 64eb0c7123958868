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


# After 22 steps of the run below the two ranks' batches sit on either side of the bound (active fractions 0.060
# and 0.042, measured): the step to pause at.
PAUSE = 23


def _torchrun(args: list[str]) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "app.cli",
           *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=os.getcwd())
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_two_rank_resume_at_the_sparse_bound_gives_identical_weights(tmp_path) -> None:
    """Two ranks paused and resumed end bit for bit where the straight two-rank run ends, with L0 at the sparse
    path's bound (5 % of d_sae), where one rank's batch can fall under it while the other's is over. Each rank
    picks the next step's path (dense or sparse) from the global batch's active fraction, the one the checkpoint
    carries; when each picked from its own, the other rank resumed on rank 0's path and the weights differed in
    the last bits."""
    from app.training.checkpoint import list_checkpoints, load_checkpoint

    g = torch.Generator().manual_seed(3)
    data = save_activation_file(tmp_path / "acts.safetensors", torch.randn(2000, 8, generator=g) + 0.3)
    args = ["train", "--activations", str(data), "--d-sae", "64", "--target-l0", "3.2", "--tokens", str(64 * 40),
            "--batch-size", "64", "--buffer-tokens", "256", "--no-progress"]
    _torchrun([*args, "--out", str(tmp_path / "straight")])
    _torchrun([*args, "--out", str(tmp_path / "resumed"), "--stop-at-step", str(PAUSE)])
    _, state = load_checkpoint(list_checkpoints(tmp_path / "resumed")[-1])
    assert state["step"] == PAUSE
    _torchrun([*args, "--out", str(tmp_path / "resumed"), "--resume"])
    a = load_file(str(tmp_path / "straight" / "sae_weights.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "sae_weights.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
