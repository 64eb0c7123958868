"""Faults while writing an SAE: `save_native` interrupted at any point leaves the previous SAE loadable.

Two ways in: an exception injected at each step of the write (disk full, a signal), and a writer process
frozen with SIGSTOP at random moments — what is on disk while it is frozen is exactly what a crash (SIGKILL,
power loss after fsync) at that moment would leave.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import app.sae.formats as formats
from app.sae import JumpReLUSAE, load_sae
from tests.reliability.faults import Boom, fail_on_call

ROOT = Path(__file__).resolve().parents[2]


def _sae(seed: int, d_in: int = 8, d_sae: int = 16) -> JumpReLUSAE:
    meta = {"hook_name": "blocks.0.hook_resid_post"}
    return JumpReLUSAE.create(d_in, d_sae, threshold=0.01, seed=seed, metadata=meta)


def _same(a: JumpReLUSAE, b: JumpReLUSAE) -> bool:
    return all(torch.equal(getattr(a, k), getattr(b, k)) for k in ("W_enc", "W_dec", "b_enc", "b_dec"))


@pytest.mark.parametrize(
    "target,name,n",
    [
        (formats, "save_file", 1),  # weights
        (formats, "save_file", 2),  # sparsity
        (formats, "fsync_file", 2),
        (os, "rename", 1),  # old folder out of the way
        (os, "rename", 2),  # new folder into place
        (formats, "fsync_dir", 1),
    ],
)
def test_interrupted_save_keeps_previous_sae(tmp_path, monkeypatch, target, name, n):
    folder = tmp_path / "sae"
    old = _sae(0)
    formats.save_native(old, folder, sparsity=torch.zeros(16))
    fail_on_call(monkeypatch, target, name, n)
    new = _sae(1)
    with pytest.raises(Boom):
        formats.save_native(new, folder, sparsity=torch.zeros(16))
    monkeypatch.undo()
    back = load_sae(folder)
    # Either the save never happened or (failure after the swap, before cleanup) it fully happened.
    assert _same(back, old) or (_same(back, new) and name == "fsync_dir")
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "sae"]
    if name == "fsync_dir":  # interrupted after the swap: the previous SAE may still sit aside
        leftovers = [n for n in leftovers if not n.startswith(".sae.old-")]
    assert not leftovers, f"temporary folders left behind: {leftovers}"
    formats.save_native(new, folder)  # and the next save works despite anything left behind
    assert _same(load_sae(folder), new)


def test_killed_between_the_two_renames_still_loads(tmp_path):
    """A crash after moving the old folder aside and before moving the new one in leaves only `.sae.old-PID`."""
    folder = tmp_path / "sae"
    old = _sae(0)
    formats.save_native(old, folder)
    os.rename(folder, tmp_path / ".sae.old-12345")  # the state such a crash leaves
    assert _same(load_sae(folder), old)


WRITER = textwrap.dedent("""
    import sys, torch
    from app.sae import JumpReLUSAE
    from app.sae.formats import save_native
    folder = sys.argv[1]
    saes = [JumpReLUSAE.create(128, 1024, threshold=0.01, seed=s) for s in (0, 1)]
    print("ready", flush=True)
    i = 0
    while True:
        save_native(saes[i % 2], folder, sparsity=torch.zeros(1024))
        i += 1
""")


def test_writer_frozen_at_random_moments_always_leaves_a_loadable_sae(tmp_path):
    folder = tmp_path / "sae"
    expected = [JumpReLUSAE.create(128, 1024, threshold=0.01, seed=s) for s in (0, 1)]
    formats.save_native(expected[0], folder)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(folder)], cwd=ROOT, stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    rng = random.Random(0)
    seen = set()
    try:
        assert proc.stdout.readline().strip() == b"ready"
        for _ in range(25):
            time.sleep(rng.uniform(0.0, 0.05))
            proc.send_signal(signal.SIGSTOP)  # frozen mid-write: the disk holds what a crash would leave
            try:
                back = load_sae(folder)
                match = [i for i, e in enumerate(expected) if _same(back, e)]
                assert match, "loaded an SAE that is neither the old nor the new one"
                seen.add(match[0])
            finally:
                proc.send_signal(signal.SIGCONT)
    finally:
        proc.kill()
        proc.wait(10)
    back = load_sae(folder)  # and after a real SIGKILL
    assert any(_same(back, e) for e in expected)
    assert seen, "never observed a loadable SAE"
