"""benchmarks/real_dead_latents.py's `measure`, against L0, dead latents and FVU counted by hand in float64 — as
the SAE reads, and read at another L0 with every θ scaled by one factor (--at-l0)."""

from __future__ import annotations

import pytest
import torch

from app.sae import JumpReLUSAE, load_sae
from app.training.activations import save_activation_file
from benchmarks import real_dead_latents
from benchmarks.real_dead_latents import main, measure

ROWS = 3000


@pytest.fixture(scope="module")
def sae_and_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("measure")
    sae = JumpReLUSAE.create(16, 48, threshold=0.05, seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        sae.b_enc.copy_(0.1 * torch.randn(48, generator=gen))
        sae.b_dec.copy_(0.3 * torch.randn(16, generator=gen))
        sae.log_threshold.copy_(torch.log(0.3 + 0.5 * torch.rand(48, generator=gen)))
    sae.save(str(root / "sae"))
    x = torch.randn(ROWS, 16, generator=gen) + 0.5
    return root / "sae", save_activation_file(root / "held.safetensors", x), x.double()


def _by_hand(folder, x: torch.Tensor, scale: float) -> dict[str, float]:
    """The SAE written out: active iff pre > scale·θ, x̂ = f·W_dec + b_dec, FVU over the per-dimension mean."""
    sae = load_sae(folder)
    assert not sae.cfg.apply_b_dec_to_input  # the formula below reads raw x
    w_enc, b_enc = sae.W_enc.detach().double(), sae.b_enc.detach().double()
    w_dec, b_dec = sae.W_dec.detach().double(), sae.b_dec.detach().double()
    pre = x @ w_enc + b_enc
    active = pre > scale * sae.threshold.detach().double()
    x_hat = (pre * active) @ w_dec + b_dec
    fvu = (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    return {"l0": float(active.sum(1).double().mean()), "dead": float((active.sum(0) == 0).double().mean()),
            "fvu": float(fvu)}


def test_measure_matches_the_sae_written_out(sae_and_file, monkeypatch) -> None:
    folder, held, x = sae_and_file
    monkeypatch.setattr(real_dead_latents, "CHUNK_ROWS", 1024)  # three chunks, the last one short
    got, ref = measure(folder, held), _by_hand(folder, x, 1.0)
    assert got["tokens"] == ROWS and "theta_scale" not in got
    assert got["l0"] == pytest.approx(ref["l0"], rel=1e-3)
    assert got["dead"] == pytest.approx(ref["dead"])
    assert got["fvu"] == pytest.approx(ref["fvu"], rel=1e-4)


def test_at_l0_reads_the_same_sae_at_the_asked_sparsity(sae_and_file, monkeypatch) -> None:
    pytest.importorskip("scipy", reason="benchmarks/synthetic.py's metrics need scipy (the interop extra)")
    folder, held, x = sae_and_file
    monkeypatch.setattr(real_dead_latents, "CHUNK_ROWS", 1024)
    monkeypatch.setattr(real_dead_latents, "FIT_ROWS", ROWS)  # fitted on every row: the L0 lands on the target
    plain, reachable = _by_hand(folder, x, 1.0), _by_hand(folder, x, 0.0)["l0"]  # θ × 0: every pre > 0 fires
    assert reachable > 1.3 * plain["l0"]
    for target in (0.6 * plain["l0"], 1.3 * plain["l0"]):
        got = measure(folder, held, at_l0=target)
        assert got["l0"] <= target + 1e-6 and got["l0"] > target - 0.01  # one firing is 1/3000; ties allow a few
        assert (got["theta_scale"] > 1.0) == (target < plain["l0"])
        ref = _by_hand(folder, x, got["theta_scale"])  # the same dictionary, θ × one factor
        assert got["l0"] == pytest.approx(ref["l0"], rel=1e-3)
        assert got["fvu"] == pytest.approx(ref["fvu"], rel=1e-4)
        assert got["fvu"] != pytest.approx(plain["fvu"], rel=1e-3)  # another sparsity, another FVU


def test_a_non_positive_l0_is_refused_with_one_line(sae_and_file, capsys) -> None:
    folder, held, _ = sae_and_file
    with pytest.raises(SystemExit) as exc:
        main(["measure", "--sae", str(folder), "--activations", str(held), "--at-l0", "0"])
    assert exc.value.code == 2
    assert "--at-l0 must be a positive L0, got 0.0" in capsys.readouterr().err
