"""benchmarks/polish_speed.py on a planted dictionary: started near it, every screen's polished rows code held-out
tokens about as well as the planted rows do and better than the start (the ground truth: tokens made of 3 planted
rows each), and the JSON's ratios are its own."""

from __future__ import annotations

import json

import torch

from app.sae import JumpReLUSAE
from app.training.activations import save_activation_file
from benchmarks.polish_speed import held_fvu, main


def test_the_polish_codes_planted_tokens_about_as_well_as_the_planted_rows(tmp_path, capsys) -> None:
    g = torch.Generator().manual_seed(0)
    planted = torch.nn.functional.normalize(torch.randn(40, 16, generator=g), dim=1)
    support = torch.rand(10240, 40, generator=g).argsort(dim=1)[:, :3]
    codes = torch.zeros(10240, 40).scatter_(1, support, 0.5 + torch.rand(10240, 3, generator=g))
    x, held = codes @ planted, slice(8192, None)
    sae = JumpReLUSAE.create(16, 40, threshold=0.05, seed=1)  # b_dec 0
    with torch.no_grad():
        sae.W_dec.copy_(planted + 0.15 * torch.randn(40, 16, generator=g))
    sae.save(str(tmp_path / "sae"))
    data = save_activation_file(tmp_path / "x.safetensors", x)
    assert main(["--sae", str(tmp_path / "sae"), "--activations", str(data), "--k", "3", "--tokens", "8192",
                 "--held", "2048", "--screens", "0", "12", "--epochs", "4"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["k"] == 3 and out["rows"] == 40 and [r["screen"] for r in out["runs"]] == [0, 12]
    start, truth = held_fvu(sae.W_dec.detach().float(), x[held], 3), held_fvu(planted, x[held], 3)
    for run in out["runs"]:
        assert run["held_fvu"] < 0.5 * start and run["held_fvu"] < truth + 0.02
        assert run["held_fvu_ratio"] == run["held_fvu"] / out["runs"][0]["held_fvu"]
    assert out["runs"][0]["speed_up"] == 1.0
