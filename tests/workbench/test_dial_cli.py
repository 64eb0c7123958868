"""`jumpscope dial`: the curve as JSON, --target-l0 --save writes a loadable edited SAE, bad input exits 2."""

from __future__ import annotations

import json

import torch

from app.cli import main
from app.sae import load_sae


def test_dial_cli_curve_and_save(tmp_path, wb_sae_folder, wb_corpus, capsys):
    rc = main(["dial", "--sae", str(wb_sae_folder), "--corpus", str(wb_corpus), "--factors", "2,0.5,1",
               "--tokens", "128", "--no-lm-loss", "--json", "--device", "cpu"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    l0 = [p["l0"] for p in out["curve"]]
    assert [p["factor"] for p in out["curve"]] == [0.5, 1.0, 2.0] and l0 == sorted(l0, reverse=True)
    assert out["curve"][1]["l0"] == out["baseline"]["l0"] and out["sample"]["origin"] == "explicit"
    target = out["baseline"]["l0"] / 2
    rc = main(["dial", "--sae", str(wb_sae_folder), "--corpus", str(wb_corpus), "--target-l0", str(target),
               "--tokens", "128", "--save", str(tmp_path / "half"), "--device", "cpu"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "saved" in text
    edited, src = load_sae(tmp_path / "half"), load_sae(wb_sae_folder)
    meta = edited.cfg.metadata["threshold_edit"]
    assert meta["edit"]["target_l0"] == target
    assert torch.equal(edited.threshold, (src.threshold * meta["edit"]["factor"]).to(src.dtype))


def test_dial_cli_per_latent_edit(tmp_path, wb_sae_folder, wb_corpus, capsys):
    rc = main(["dial", "--sae", str(wb_sae_folder), "--corpus", str(wb_corpus), "--factors", "1", "--tokens", "64",
               "--no-lm-loss", "--set", "3=0.25", "--set", "7=0", "--save", str(tmp_path / "e"), "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    src, edited = load_sae(wb_sae_folder), load_sae(tmp_path / "e")
    want = src.threshold.clone()
    want[3], want[7] = 0.25, 0.0
    assert torch.equal(edited.threshold, want)
    assert edited.cfg.metadata["threshold_edit"]["edit"] == {"factor": 1.0, "latents": {"3": 0.25, "7": 0.0}}
    assert main(["dial", "--sae", str(wb_sae_folder), "--factors", "1", "--set", "3=x", "--save", "y"]) == 2
    assert main(["dial", "--sae", str(wb_sae_folder), "--factors", "1", "--set", "3=1"]) == 2  # needs --save


def test_dial_cli_bad_input(wb_sae_folder, capsys):
    assert main(["dial", "--sae", str(wb_sae_folder), "--factors", "a,b"]) == 2
    assert "--factors" in capsys.readouterr().err
    assert main(["dial", "--sae", str(wb_sae_folder), "--factors", "1,2", "--save", "x"]) == 2
    assert main(["dial", "--sae", str(wb_sae_folder), "--factors", "0"]) == 2  # no sample, or a bad factor
