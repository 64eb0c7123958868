"""`jumpscope train` bad input: one line on stderr, exit code 2, nothing written."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from app.cli import main
from app.training.activations import save_activation_file


def _run(capsys, *argv: str) -> tuple[int, list[str]]:
    rc = main(["train", "--no-progress", *argv])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return rc, err


def _fails_cleanly(capsys, out, *argv: str, expect: str) -> None:
    rc, err = _run(capsys, *argv, "--out", str(out))
    assert rc == 2
    assert len(err) == 1 and expect in err[0], err
    assert not out.exists()


def test_activation_file_problems(tmp_path, capsys) -> None:
    out = tmp_path / "sae"
    common = ("--d-sae", "16", "--target-l0", "2", "--tokens", "8192")
    _fails_cleanly(capsys, out, "--activations", str(tmp_path / "nope.safetensors"), *common, expect="not found")
    bad = torch.randn(100, 8)
    bad[17, 3] = float("nan")
    _fails_cleanly(capsys, out, "--activations", str(save_activation_file(tmp_path / "nan.safetensors", bad)),
                   *common, expect="NaN or Inf")
    inf = torch.randn(100, 8)
    inf[5, 0] = float("inf")
    _fails_cleanly(capsys, out, "--activations", str(save_activation_file(tmp_path / "inf.safetensors", inf)),
                   *common, expect="NaN or Inf")
    good = save_activation_file(tmp_path / "ok.safetensors", torch.randn(100, 8))
    _fails_cleanly(capsys, out, "--activations", str(good), *common, "--d-in", "12", expect="does not match")
    save_file({"acts": torch.randn(4, 8)}, str(tmp_path / "wrongkey.safetensors"))
    _fails_cleanly(capsys, out, "--activations", str(tmp_path / "wrongkey.safetensors"), *common,
                   expect="'activations'")
    save_file({"activations": torch.randn(4, 8, 2)}, str(tmp_path / "3d.safetensors"))
    _fails_cleanly(capsys, out, "--activations", str(tmp_path / "3d.safetensors"), *common, expect="[N, d_in]")


def test_hyperparameter_and_output_problems(tmp_path, capsys) -> None:
    good = str(save_activation_file(tmp_path / "ok.safetensors", torch.randn(100, 8)))
    out = tmp_path / "sae"
    base = ("--activations", good, "--d-sae", "16", "--tokens", "8192")
    _fails_cleanly(capsys, out, *base, "--target-l0", "16", expect="--target-l0")
    _fails_cleanly(capsys, out, *base, "--target-l0", "2", "--lr", "3", expect="--lr")
    _fails_cleanly(capsys, out, *base, "--target-l0", "2", "--l0-coefficient", "1", expect="exactly one of")
    _fails_cleanly(capsys, out, "--activations", good, "--d-sae", "16", "--tokens", "10", "--target-l0", "2",
                   expect="--tokens")
    _fails_cleanly(capsys, out, *base, "--target-l0", "2", "--resume", expect="no checkpoint")
    out.mkdir()
    (out / "something").write_text("x")
    rc, err = _run(capsys, *base, "--target-l0", "2", "--out", str(out))
    assert rc == 2 and len(err) == 1 and "already exists" in err[0]
    assert sorted(p.name for p in out.iterdir()) == ["something"]


def test_corpus_problems(tmp_path, capsys) -> None:
    out = tmp_path / "sae"
    common = ("--model", str(tmp_path / "no-model"), "--layer", "0", "--d-sae", "16", "--target-l0", "2",
              "--tokens", "8192")
    _fails_cleanly(capsys, out, *common, "--corpus", str(tmp_path / "missing.txt"), expect="not found")
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    _fails_cleanly(capsys, out, *common, "--corpus", str(tmp_path / "empty.txt"), expect="empty")
    (tmp_path / "c.txt").write_text("some text\n")
    _fails_cleanly(capsys, out, *common, "--corpus", str(tmp_path / "c.txt"), expect="cannot load model")


def test_spec_minimal_form_trains_with_defaults(tmp_path, capsys) -> None:
    """SPEC §8: `jumpscope train --activations FILE --d-sae N --out DIR` — one pass, default target L0."""
    from app.sae import load_sae
    from app.training.config import TrainConfig

    acts = save_activation_file(tmp_path / "acts.safetensors", torch.randn(8192, 8))
    rc, err = _run(capsys, "--activations", str(acts), "--d-sae", "32", "--out", str(tmp_path / "sae"))
    assert rc == 0, err
    cfg = TrainConfig.load(tmp_path / "sae")
    assert cfg.tokens == 8192 and cfg.target_l0 == 4.0 and cfg.l0_coefficient is None
    assert load_sae(tmp_path / "sae").d_sae == 32
    rc, err = _run(capsys, "--model", "m", "--corpus", "c", "--layer", "0", "--d-sae", "32",
                   "--out", str(tmp_path / "x"))
    assert rc == 2 and "--tokens is required" in err[-1]
