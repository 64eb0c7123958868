"""Progress lines with rate and ETA: the arithmetic (fake clock), and one line per phase of a real index run."""

from __future__ import annotations

import logging
import re
from dataclasses import replace

from app.index import progress as progress_mod
from app.index.progress import Progress, fmt_seconds

PHASES = ("index pass", "index finalise, corpus rows", "index finalise, example windows",
          "index finalise, loss effects", "index finalise, logit effects and neighbours", "index finalise, write")


def test_eta_is_the_remaining_work_at_the_average_rate(monkeypatch, caplog):
    clock = iter([100.0, 110.0, 112.0, 130.0, 150.0])
    monkeypatch.setattr(progress_mod.time, "perf_counter", lambda: next(clock))
    with caplog.at_level(logging.INFO, logger="app.index"):
        p = Progress("phase x", 400, "rows", every_s=5)  # t=100
        p.update(100)  # t=110: 100 rows in 10 s → 10 rows/s, 300 left → ETA 30 s
        p.update(10)  # t=112: only 2 s since the last line → silent
        p.update(90)  # t=130: 200 rows in 30 s → 6.67/s, 200 left → ETA 30 s
        assert p.close() == 50.0  # t=150
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["phase x: 400 rows to do",
                     "phase x: 100/400 rows (25%), 10 rows/s, ETA 30s",
                     "phase x: 200/400 rows (50%), 6.67 rows/s, ETA 30s",
                     "phase x: done, 200 rows in 50s"]


def test_fmt_seconds():
    assert [fmt_seconds(s) for s in (0, 59.4, 61, 3599, 3600 * 32 + 60 * 7)] == ["0s", "59s", "1m01s", "59m59s",
                                                                               "32h07m"]


def test_every_phase_of_an_index_run_logs_progress_with_an_eta(monkeypatch, caplog, tmp_path, tiny_lm, tiny_sae,
                                                               corpus_file, index_cfg):
    from app.index.builder import run_index
    from app.index.store import connect, get_meta

    monkeypatch.setattr(progress_mod, "PROGRESS_EVERY_S", 0.0)  # a line at every update
    cfg = replace(index_cfg, batch_contexts=2, top_k=2, n_intervals=1, per_interval=1, loss_effect_top=1)
    with caplog.at_level(logging.INFO, logger="app.index"):
        run_index(tiny_lm, tiny_sae, corpus_file, 6 * 32, tmp_path / "i.db", cfg, progress=True)
    lines = [r.getMessage() for r in caplog.records]
    for name in PHASES:
        mine = [m for m in lines if m.startswith(name + ":")]
        assert mine[-1].startswith(f"{name}: done"), name
        if name in PHASES[:4]:  # phases of several steps show a rate and an ETA on the way
            assert any(re.search(r"\d+/\d+ \w+ \(\d+%\), [\d.e+]+ \w+/s, ETA \d", m) for m in mine), name
    with connect(tmp_path / "i.db", readonly=True) as conn:
        assert set(get_meta(conn, "finalize_phases")) == {"corpus_rows", "example_windows", "loss_effects",
                                                          "logits_neighbours", "write"}
