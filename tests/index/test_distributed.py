"""`jumpscope index` under torchrun (2 CPU ranks, gloo) writes the same index as one process."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import numpy as np
import torch

from app.cli import main
from app.index.store import connect, get_meta, load_state

N_ROWS = 13  # 7 batches of 2 rows: rank 0 takes 4 (one partial), rank 1 takes 3


def _rows(db, table: str) -> list[tuple]:
    with connect(db, readonly=True) as conn:
        conn.row_factory = sqlite3.Row
        return [tuple(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2")]


def test_two_gloo_ranks_write_the_single_process_index(tmp_path, tiny_sae, corpus_file):
    sae_dir = tmp_path / "sae"
    tiny_sae.save(str(sae_dir))
    args = ["index", "--sae", str(sae_dir), "--corpus", str(corpus_file),
            "--device", "cpu", "--context-size", "32", "--batch-contexts", "2", "--top-k", "4",
            "--intervals", "3", "--per-interval", "2", "--outlier-factor", "1.1", "--no-loss-effects"]
    single, ranks, extended = tmp_path / "single.db", tmp_path / "ranks.db", tmp_path / "extended.db"
    assert main([*args, "--tokens", str(N_ROWS * 32), "--out", str(single)]) == 0
    torchrun([*args, "--tokens", str(N_ROWS * 32), "--out", str(ranks)])
    assert_same_index(single, ranks)
    # Extension under torchrun of a one-process index of a non-aligned 5 rows: rank 0 resumes the stored state.
    assert main([*args, "--tokens", str(5 * 32), "--out", str(extended)]) == 0
    torchrun([*args, "--tokens", str(N_ROWS * 32), "--out", str(extended)])
    assert_same_index(single, extended)


def torchrun(args: list[str]) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "app.cli", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=os.getcwd())
    assert proc.returncode == 0, proc.stderr[-4000:]


def assert_same_index(single, ranks) -> None:
    with connect(single, readonly=True) as a, connect(ranks, readonly=True) as b:
        for key in ("rows_done", "tokens_total", "tokens_seen", "norm_reference", "status"):
            assert get_meta(a, key) == get_meta(b, key), key
        assert get_meta(b, "status") == "complete" and get_meta(b, "rows_done") == N_ROWS
        sa, sb = load_state(a), load_state(b)
    assert int(sa.count.sum()) > 0
    for name, t in sa.tensors().items():
        u = getattr(sb, name)
        if name == "total":  # float64 sums in another order
            torch.testing.assert_close(t, u, rtol=1e-12, atol=0)
        else:
            assert torch.equal(t, u), name
    # The finished tables: everything equal (floats up to summation order).
    for table in ("latents", "examples"):
        ra, rb = _rows(single, table), _rows(ranks, table)
        assert len(ra) == len(rb) > 0
        for x, y in zip(ra, rb, strict=True):
            for u, v in zip(x, y, strict=True):
                if isinstance(u, float):
                    assert np.isclose(u, v, rtol=1e-12), (table, x[0])
                else:
                    assert u == v, (table, x[0])
