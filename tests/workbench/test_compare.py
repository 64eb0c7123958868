"""Comparison data: eval.json → metrics with intervals (no paths), and the scatter geometry puts each point and
its 95 % whisker where the axes say."""

from __future__ import annotations

import pytest

from app.web.viz import scatter, theta_bars
from app.workbench.compare import metrics_view

EVAL = {"l0": 12.0, "fvu": 0.24, "fvu_ci": [0.2, 0.3], "delta_lm_loss": 0.011, "delta_lm_loss_ci": [0.009, 0.013],
        "ce_score": 0.9, "kl_div": float("nan"), "tokens": 980, "sae": "/srv/secret/sae", "model": "/srv/m",
        "split": {"corpus": "/srv/data/train.jsonl", "part": "held_out", "holdout_every": 20},
        "bootstrap": {"resamples": 1000, "level": 0.95}}


def test_metrics_view_keeps_numbers_and_intervals_without_paths():
    v = metrics_view(EVAL)
    assert v["l0"] == 12.0 and v["fvu_ci"] == [0.2, 0.3] and v["delta_lm_loss_ci"] == [0.009, 0.013]
    assert v["kl_div"] is None and v["ce_score_ci"] is None and v["tokens"] == 980
    assert v["split"] == {"corpus": "train.jsonl", "part": "held_out", "holdout_every": 20}
    assert "/srv" not in repr(v)
    assert metrics_view({}) is None and metrics_view({"fvu": 0.1}) is None


def test_scatter_places_points_and_whiskers_on_the_axes():
    pts = [{"id": "a", "href": "/a", **metrics_view(EVAL)},
           {"id": "b", "href": "/b", "l0": 30.0, "fvu": 0.1, "fvu_ci": None}]
    curve = [{"id": "a", "points": [{"factor": 0.5, "l0": 40.0, "fvu": 0.05}, {"factor": 2, "l0": 4.0, "fvu": 0.5}]}]
    g = scatter(pts, "l0", "fvu", curve)
    a, b = g["points"]
    assert a["cx"] < b["cx"] and a["cy"] < b["cy"]  # more L0 → right; more FVU (a) → up (smaller y)
    assert a["y_lo"] > a["cy"] > a["y_hi"] and b["y_lo"] is None
    # linear axes: the whisker's pixel span is proportional to its value span
    scale = (b["cy"] - a["cy"]) / (0.1 - 0.24)
    assert a["y_lo"] - a["y_hi"] == pytest.approx(-scale * 0.1, rel=1e-3)
    assert g["curves"][0]["path"].startswith("M") and len(g["curves"][0]["dots"]) == 2
    assert all(g["left"] <= t["pos"] <= g["right"] for t in g["xticks"])
    assert scatter([{"id": "x", "l0": None, "fvu": 1}], "l0", "fvu") is None


def test_theta_bars_mark_theta_and_split_below_above():
    hist = {"edges": [0.5, 0.75, 1.0, 1.25, 1.5], "counts": [1, 4, 2, 0], "threshold": 1.0}
    g = theta_bars(hist, marker=0.6)
    assert [b["cls"] for b in g["bars"]] == ["below", "below", "above", "above"]
    assert g["theta_x"] == pytest.approx(240) and g["marker_x"] == pytest.approx(48)
    assert theta_bars(hist, marker=3.0)["marker_x"] is None and theta_bars(None) is None
