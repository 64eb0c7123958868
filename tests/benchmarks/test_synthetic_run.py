"""benchmarks/synthetic.py's driver: the --ceiling run starts at the given directions, the --truth-decoder run keeps
them, the --truth-cone run keeps its rows within the cone (against a brute-force search of the cone), and the
summary's means."""

from __future__ import annotations

import logging

import pytest
import torch

pytest.importorskip("scipy", reason="benchmarks/synthetic_metrics.py needs scipy (installed with the interop extra)")

from benchmarks.synthetic import at_l0, summarise, train_jumpscope
from benchmarks.synthetic_data import PlantedDictionary, SynthConfig
from benchmarks.synthetic_metrics import DIRECTION, cosine_matrix


def _best_cos(dirs: torch.Tensor, w_dec: torch.Tensor) -> torch.Tensor:
    return cosine_matrix(dirs, w_dec).max(dim=1).values


@pytest.fixture(scope="module")
def planted():
    truth = PlantedDictionary(SynthConfig(d=16, ratio=2.0, l0=3.0), seed=0)
    x, _ = truth.sample(2048, seed=1)
    return truth, x


def test_the_ceiling_run_starts_at_the_planted_directions(planted) -> None:
    truth, x = planted
    # two steps at a negligible LR: the decoder is where it started
    kw = {"lr": "1e-7", "threshold_lr": "1e-7"}
    started = train_jumpscope(x, truth.dirs.shape[0], 3.0, 1024, 512, seed=0, overrides=kw, start=truth.dirs)
    random = train_jumpscope(x, truth.dirs.shape[0], 3.0, 1024, 512, seed=0, overrides=kw)
    assert _best_cos(truth.dirs, started.W_dec.detach()).min() > 0.999
    assert _best_cos(truth.dirs, random.W_dec.detach()).mean() < 0.8  # a random start is far from the answer
    # W_enc = W_decᵀ at the start, as in the default init
    assert torch.allclose(started.W_enc.detach().T / started.W_enc.detach().T.norm(dim=1, keepdim=True),
                          truth.dirs, atol=1e-3)


def test_the_truth_decoder_run_keeps_the_planted_directions_while_the_encoder_trains(planted) -> None:
    truth, x = planted
    # the default LR over 8 steps: a started-but-free decoder moves, a held one does not
    held = train_jumpscope(x, truth.dirs.shape[0], 3.0, 4096, 512, seed=0, overrides={}, start=truth.dirs, hold=True)
    free = train_jumpscope(x, truth.dirs.shape[0], 3.0, 4096, 512, seed=0, overrides={}, start=truth.dirs)
    w_held = held.W_dec.detach()
    unit = w_held / w_held.norm(dim=1, keepdim=True)
    assert torch.allclose(unit, truth.dirs, atol=1e-5)
    assert _best_cos(truth.dirs, free.W_dec.detach()).min() < 1 - 1e-4
    w_enc = held.W_enc.detach().T
    assert _best_cos(truth.dirs, w_enc).min() < 1 - 1e-4  # the encoder did train


def test_the_truth_cone_run_trains_its_rows_but_keeps_each_within_the_cone(planted) -> None:
    truth, x = planted
    # 32 steps at the default LR: a free run started at the answer tilts rows well past cos 0.99
    free = train_jumpscope(x, truth.dirs.shape[0], 3.0, 8192, 256, seed=0, overrides={}, start=truth.dirs)
    coned = train_jumpscope(x, truth.dirs.shape[0], 3.0, 8192, 256, seed=0, overrides={}, start=truth.dirs, cone=0.99)

    def along(sae) -> torch.Tensor:
        return (torch.nn.functional.normalize(sae.W_dec.detach(), dim=1) * truth.dirs).sum(1)

    assert along(free).min() < 0.95
    assert along(coned).min() > 0.99 - 1e-5
    assert along(coned).max() < 1 - 1e-4  # the rows did move: not held
    with pytest.raises(ValueError, match="cone needs start"):
        train_jumpscope(x, truth.dirs.shape[0], 3.0, 1024, 512, seed=0, overrides={}, cone=0.9)


def test_the_truth_decoder_run_keeps_the_planted_directions_through_split_checks(planted) -> None:
    truth, x = planted
    # a split check every step with a low Jaccard bar re-initialises latents of a free run; the held run has none
    kw = {"split_every": "1", "split_jaccard": "0.05"}
    held = train_jumpscope(x, truth.dirs.shape[0], 3.0, 8192, 256, seed=0, overrides=kw, start=truth.dirs, hold=True)
    w_held = held.W_dec.detach()
    assert torch.allclose(w_held / w_held.norm(dim=1, keepdim=True), truth.dirs, atol=1e-5)


def test_the_truth_decoder_run_keeps_the_planted_directions_through_collapse_checks(planted) -> None:
    truth, x = planted
    # latents under 0.99 of the median gain count as collapsed, checked every step: a started-but-free run moves
    # rows onto missing directions, the held run keeps the answer (before 2026-12-07's fix it did not)
    kw = {"split_every": "1", "split_jaccard": "0", "collapse_share": "0.99"}
    held = train_jumpscope(x, truth.dirs.shape[0], 3.0, 8192, 256, seed=0, overrides=kw, start=truth.dirs, hold=True)
    free = train_jumpscope(x, truth.dirs.shape[0], 3.0, 8192, 256, seed=0, overrides=kw, start=truth.dirs)
    w_held = held.W_dec.detach()
    assert torch.allclose(w_held / w_held.norm(dim=1, keepdim=True), truth.dirs, atol=1e-5)
    assert _best_cos(truth.dirs, free.W_dec.detach()).min() < 0.99  # the checks did act on the free run


def test_the_ceiling_run_refuses_directions_of_the_wrong_shape(planted) -> None:
    truth, x = planted
    with pytest.raises(ValueError, match="start directions"):
        train_jumpscope(x, truth.dirs.shape[0] + 1, 3.0, 1024, 512, seed=0, overrides={}, start=truth.dirs)


def _side(v: float) -> dict:
    """One trainer's scores: every metric v, except fvu (lower is better) 1 − v."""
    return {k: (1 - v if k == "fvu" else v) for k in DIRECTION}


def test_summary_means_ratios_and_the_ceiling_only_when_every_run_has_one() -> None:
    def run(js: float, sl: float, top: float | None) -> dict:
        r = {"setting": "s", "jumpscope": _side(js), "saelens": _side(sl)}
        if top is not None:
            r["ceiling"] = _side(top)
        return r

    both = summarise([run(0.8, 0.6, 0.9), run(0.6, 0.8, 1.0)])
    assert both["jumpscope"]["max_cos"] == pytest.approx(0.7) and both["saelens"]["max_cos"] == pytest.approx(0.7)
    assert both["ceiling"]["max_cos"] == pytest.approx(0.95)
    assert both["ratio"]["max_cos"] == pytest.approx(1.0)
    assert both["wins"]["max_cos"] == pytest.approx(0.5) and both["wins"]["fvu"] == pytest.approx(0.5)
    assert "ceiling" not in summarise([run(0.8, 0.6, 0.9), run(0.6, 0.8, None)])
    held = [{**run(0.8, 0.6, None), "truth_decoder": _side(0.5), "matched": _side(0.7)},
            {**run(0.6, 0.8, None), "truth_decoder": _side(0.7), "matched": _side(0.9)}]
    summary = summarise(held)
    assert summary["truth_decoder"]["fvu"] == pytest.approx(0.4) and summary["matched"]["fvu"] == pytest.approx(0.2)
    assert "ceiling" not in summary


def test_summary_of_jumpscope_alone_has_no_saelens_ratio_or_wins() -> None:
    alone = summarise([{"setting": "a", "jumpscope": _side(0.8)}, {"setting": "b", "jumpscope": _side(0.6)}])
    assert alone["jumpscope"]["max_cos"] == pytest.approx(0.7) and alone["settings"] == ["a", "b"]
    assert not {"saelens", "ratio", "wins"} & set(alone)
    mixed = summarise([{"setting": "a", "jumpscope": _side(0.8), "saelens": _side(0.6)},
                       {"setting": "b", "jumpscope": _side(0.6)}])
    assert not {"saelens", "ratio", "wins"} & set(mixed)  # only when every run has SAELens


def test_jumpscope_alone_runs_end_to_end_and_print_its_json(capsys, monkeypatch) -> None:
    """`--no-saelens` trains and scores JumpScope and never calls SAELens; the last line is the summary."""
    import json

    import benchmarks.synthetic as synthetic

    def no_saelens(*args, **kwargs):
        raise AssertionError("SAELens trained despite --no-saelens")

    monkeypatch.setattr(synthetic, "train_saelens", no_saelens)
    # main is a CLI: its thread count, environment and the "app" logger's level must not outlive the test
    # (a WARNING-level "app" logger hid the INFO records later tests read through caplog)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    app_log = logging.getLogger("app")
    level = app_log.level
    try:
        assert synthetic.main(["--settings", "s2", "--tokens", "65536", "--batch-size", "1024", "--no-saelens",
                               "--threads", "1", "--truth-cone", "0.95"]) == 0
    finally:
        app_log.setLevel(level)  # setLevel, not the attribute: it also clears the loggers' level cache
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["settings"] == ["s2"] and "saelens" not in summary
    assert 0 < summary["jumpscope"]["max_cos"] <= 1 and summary["jumpscope"]["l0"] > 0
    # every row within cos 0.95 of its planted direction, so each planted direction's best row is at least that
    assert summary["truth_cone"]["max_cos"] >= 0.95 - 1e-5 and "truth_cone_at_saelens_l0" not in summary


def test_an_unavailable_device_is_refused_with_one_line(capsys) -> None:
    from benchmarks.synthetic import main

    with pytest.raises(SystemExit) as exc:
        main(["--device", "tpu", "--no-saelens"])
    assert exc.value.code == 2
    assert "--device tpu: not available here" in capsys.readouterr().err


def test_at_l0_reads_the_same_dictionary_at_another_l0(planted) -> None:
    truth, x = planted
    sae = train_jumpscope(x, truth.dirs.shape[0], 3.0, 8192, 512, seed=0, overrides={})
    theta = sae.threshold.detach().clone()

    def count(s) -> float:  # the reference: firings counted on the tokens
        return (s.encode(x) != 0).sum(-1).float().mean().item()

    trained = count(sae)
    for target in (trained * 1.2, trained * 0.7):
        moved = at_l0(sae, x, target)
        got = count(moved)
        assert got <= target and got > target - 0.01  # one firing is 1/2048; ties allow a few
        ratio = moved.threshold.detach() / theta
        live = theta > 1e-6
        assert torch.allclose(ratio[live], ratio[live][0].expand(int(live.sum())), rtol=1e-5)  # one factor for all
        assert torch.equal(moved.W_dec, sae.W_dec) and torch.equal(moved.W_enc, sae.W_enc)
    assert torch.equal(sae.threshold.detach(), theta) and count(sae) == trained  # the original is untouched
    with pytest.raises(ValueError, match="positive"):
        at_l0(sae, x, 0.0)
