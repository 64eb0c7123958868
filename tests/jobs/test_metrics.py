"""MetricsTail: incremental, partial lines, garbage, resumed runs, replaced files; series."""

from __future__ import annotations

import json
import os

from app.jobs.metrics import MetricsTail, progress_of, series


def _row(step, total=10, **kw):
    return json.dumps({"step": step, "total_steps": total, "loss": 1.0 / step, "l0": step, **kw}) + "\n"


def test_incremental_reads_and_partial_lines(tmp_path):
    p = tmp_path / "metrics.jsonl"
    tail = MetricsTail(p)
    assert tail.refresh() == [] and tail.latest == {}
    p.write_text(_row(1) + _row(2) + '{"step": 3, "lo')
    assert [r["step"] for r in tail.refresh()] == [1, 2]
    with open(p, "a") as fh:
        fh.write('ss": 0.3, "total_steps": 10}\nnot json\n[1,2]\n')
    assert [r["step"] for r in tail.refresh()] == [1, 2, 3]
    assert tail.latest["loss"] == 0.3 and progress_of(tail.latest) == 0.3


def test_resumed_run_drops_relogged_steps(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text(_row(1) + _row(2) + _row(3) + _row(2, note="resumed") + _row(3))
    rows = MetricsTail(p).refresh()
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[1].get("note") == "resumed"


def test_truncated_or_replaced_file_starts_over(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text(_row(1) + _row(2) + _row(3))
    tail = MetricsTail(p)
    assert len(tail.refresh()) == 3
    new = tmp_path / "new.jsonl"
    new.write_text(_row(5))
    os.replace(new, p)
    assert [r["step"] for r in tail.refresh()] == [5]


def test_progress_and_series():
    assert progress_of({}) == 0 and progress_of({"step": 5, "total_steps": 0}) == 0
    assert progress_of({"step": 50, "total_steps": 10}) == 1.0
    rows = [{"step": i, "loss": float(i), "l0": 2.0 * i} for i in range(1000)]
    s = series(rows, max_points=100)
    assert len(s["step"]) == 100 and s["step"][0] == 0 and s["step"][-1] == 999 and s["l0"][-1] == 1998
    assert series(rows[:3])["loss"] == [0.0, 1.0, 2.0]


def test_non_finite_values_become_null(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1, "loss": NaN, "l0": Infinity, "extra": {"x": -Infinity}, "ok": 2.5}\n')
    row = MetricsTail(p).refresh()[0]
    assert row == {"step": 1, "loss": None, "l0": None, "extra": {"x": None}, "ok": 2.5}
    json.dumps(row, allow_nan=False)  # what the API's JSON encoder insists on
