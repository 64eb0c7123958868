"""The `jumpscope` entry point: sub-commands exist and bad input is one line with exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.cli import build_parser, main


def test_all_public_subcommands_exist():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"serve", "train", "index", "eval", "demo"} <= set(sub.choices)


def test_console_script_help_runs():
    out = subprocess.run([sys.executable, "-m", "app.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "train" in out.stdout and "index" in out.stdout


def test_damaged_database_is_one_clear_line(tmp_path, tiny_sae_dir, capsys):
    db = tmp_path / "index.db"
    db.write_bytes(b"this is not an SQLite database" * 100)
    corpus = tmp_path / "c.txt"
    corpus.write_text("The red fox jumps over the lazy dog. " * 50)
    code = main(["index", "--sae", str(tiny_sae_dir), "--corpus", str(corpus), "--tokens", "64", "--device", "cpu",
                 "--context-size", "32", "--out", str(db)])
    ours = [line for line in capsys.readouterr().err.splitlines() if line.startswith("jumpscope")]
    assert code == 2
    assert len(ours) == 1 and ours[0].startswith("jumpscope index: error: database unreadable"), ours


@pytest.fixture
def tiny_sae_dir(tmp_path, tiny_model_dir):
    from app.lm import load_lm
    from app.sae import JumpReLUSAE

    model = tiny_model_dir("llama")
    lm = load_lm(model, device="cpu")
    sae = JumpReLUSAE.create(lm.d_model, 64, threshold=0.05, seed=0,
                             metadata={"model_name": str(model), "hook_name": "blocks.1.hook_resid_post"})
    sae.save(tmp_path / "sae")
    return tmp_path / "sae"
