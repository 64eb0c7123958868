"""benchmarks/polish.py: one setting end to end (the default SAE, the polished rows, the held or coned SAE)."""

from __future__ import annotations

import pytest

pytest.importorskip("scipy", reason="benchmarks/synthetic_metrics.py needs scipy (installed with the interop extra)")

from benchmarks.polish import run_one


def test_run_one_scores_the_default_and_the_held_sae(monkeypatch) -> None:
    from benchmarks import polish as mod
    from benchmarks.synthetic_data import SynthConfig

    monkeypatch.setitem(mod.SETTINGS, "tiny", SynthConfig(d=16, ratio=2.0, l0=3.0))
    out = run_one("tiny", seed=0, d=16, epochs=1, tokens=8192, batch=1024)
    assert set(out) >= {"default", "polished_rows", "held"}
    for side in ("default", "held"):
        assert 0.0 <= out[side]["max_cos"] <= 1.0 and out[side]["fvu"] >= 0.0
    # the held SAE's decoder is the polished rows, so both read the same max-|cos|
    assert out["held"]["max_cos"] == pytest.approx(out["polished_rows"]["max_cos"], abs=1e-5)


def test_run_one_with_a_cone_trains_the_rows_near_the_polished_ones(monkeypatch) -> None:
    from benchmarks import polish as mod
    from benchmarks.synthetic_data import SynthConfig

    monkeypatch.setitem(mod.SETTINGS, "tiny", SynthConfig(d=16, ratio=2.0, l0=3.0))
    out = run_one("tiny", seed=0, d=16, epochs=1, tokens=8192, batch=1024, cone=0.99)
    assert "cone" in out and "held" not in out
    assert out["cone_rows"]["min_cos_to_polished"] > 0.99 - 1e-5  # within the cone
    assert out["cone_rows"]["mean_cos_to_polished"] < 1 - 1e-4  # but trained: not held


def test_run_one_reads_both_saes_at_saelens_l0(monkeypatch) -> None:
    pytest.importorskip("sae_lens", reason="--saelens needs sae-lens (the interop extra)")
    from benchmarks import polish as mod
    from benchmarks.synthetic_data import SynthConfig

    monkeypatch.setitem(mod.SETTINGS, "tiny", SynthConfig(d=16, ratio=2.0, l0=3.0))
    out = run_one("tiny", seed=0, d=16, epochs=1, tokens=8192, batch=1024, saelens=True)
    target = out["saelens"]["l0"]
    for side in ("default", "held"):
        read = out[f"{side}_at_saelens_l0"]
        assert read["l0"] <= target + 1e-6  # at_l0: the largest L0 at or under SAELens's
        assert read["max_cos"] == pytest.approx(out[side]["max_cos"])  # same dictionary, other θ
