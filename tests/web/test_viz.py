"""View geometry for the templates (app.web.viz): the job page's inline-SVG plot points."""

from __future__ import annotations

from app.web.viz import svg_polyline


def test_svg_polyline_scales_into_box():
    out = svg_polyline([0, 1, 2, None], [10.0, 5.0, 0.0, 3.0], width=100, height=50, pad=0)
    pts = [tuple(map(float, p.split(","))) for p in out["points"].split()]
    assert pts == [(0.0, 0.0), (50.0, 25.0), (100.0, 50.0)]  # highest value at the top
    assert out["ymin"] == 0.0 and out["ymax"] == 10.0
    assert svg_polyline([], [], 10, 10)["points"] == ""
