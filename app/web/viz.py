"""Small view helpers for the templates: token heat levels, SVG histogram bars and polylines, number format.

Colours are CSS classes (heat-0 … heat-10, neg-1 … neg-10) rather than inline styles, so the pages run under
a strict Content-Security-Policy.
"""

from __future__ import annotations

import math
from typing import Any

LEVELS = 10


def heat_level(value: float | None, peak: float | None) -> int:
    """0..10: how strongly `value` lights up relative to `peak` (0 for inactive or unknown)."""
    if not value or not peak or peak <= 0 or value <= 0:
        return 0
    return max(1, min(LEVELS, math.ceil(LEVELS * value / peak)))


def heat_signed(value: float | None, scale: float | None) -> str:
    """A CSS class for a signed quantity (Δlog-prob): `pos-N` when it rose, `neg-N` when it fell."""
    if value is None or not scale or scale <= 0 or value == 0:
        return "heat-0"
    level = max(1, min(LEVELS, math.ceil(LEVELS * abs(value) / scale)))
    return f"{'pos' if value > 0 else 'neg'}-{level}"


def fmt(value: Any, digits: int = 3) -> str:
    """A number in a few significant digits; '—' for missing."""
    if value is None:
        return "—"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}"
    return str(value)


def show_token(token: str) -> str:
    """A token as shown in the UI: newlines and tabs made visible (autoescaping still applies)."""
    return token.replace("\n", "↵").replace("\t", "⇥") or "∅"


def histogram_bars(hist: dict[str, Any] | None, width: int = 480, height: int = 120) -> list[dict[str, Any]]:
    """SVG rectangles for a histogram {edges, counts}; heights on a log1p scale so rare bins stay visible."""
    if not hist:
        return []
    counts = list(hist.get("counts") or [])
    edges = list(hist.get("edges") or [])
    if not counts:
        return []
    top = max(math.log1p(max(c, 0)) for c in counts) or 1.0
    w = width / len(counts)
    bars = []
    for k, c in enumerate(counts):
        h = height * math.log1p(max(c, 0)) / top
        lo = edges[k] if k < len(edges) else None
        hi = edges[k + 1] if k + 1 < len(edges) else None
        bars.append({"x": round(k * w, 2), "y": round(height - h, 2), "w": round(max(w - 1, 1), 2),
                     "h": round(h, 2), "count": c, "lo": fmt(lo), "hi": fmt(hi)})
    return bars


def theta_bars(hist: dict[str, Any] | None, marker: float | None = None, width: int = 480,
               height: int = 120) -> dict[str, Any] | None:
    """SVG geometry of the pre-activation histogram around θ: bars (class `below` / `above` θ, linear counts),
    the x of θ and of an optional second threshold `marker` (None when it falls outside the window)."""
    if not hist or not hist.get("counts"):
        return None
    counts, edges = list(hist["counts"]), list(hist["edges"])
    lo, hi, theta = edges[0], edges[-1], hist["threshold"]
    top = max(max(counts), 1)
    w = width / len(counts)

    def x_of(v: float) -> float | None:
        return round(width * (v - lo) / (hi - lo), 2) if lo <= v <= hi and hi > lo else None

    bars = []
    for k, c in enumerate(counts):
        h = height * c / top
        bars.append({"x": round(k * w, 2), "y": round(height - h, 2), "w": round(max(w - 1, 1), 2), "h": round(h, 2),
                     "count": c, "lo": fmt(edges[k]), "hi": fmt(edges[k + 1]),
                     "cls": "below" if edges[k + 1] <= theta else "above"})
    return {"bars": bars, "theta_x": x_of(theta), "marker_x": None if marker is None else x_of(marker),
            "lo": fmt(lo), "hi": fmt(hi), "theta": fmt(theta), "width": width, "height": height}


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + k * step, 12) for k in range(int((hi - first) / step) + 1)]


def scatter(points: list[dict[str, Any]], x_key: str, y_key: str, curves: list[dict[str, Any]] | None = None,
            width: int = 480, height: int = 300, pad: int = 48) -> dict[str, Any] | None:
    """SVG geometry of a scatter plot: each point {id, href, x_key, y_key, '<y_key>_ci'?, '<x_key>_ci'?} becomes
    a circle with 95 % interval whiskers; each curve {id, points: [{x_key, y_key}]} a polyline (the dial)."""
    curves = curves or []
    xs, ys = [], []
    for p in points:
        if p.get(x_key) is None or p.get(y_key) is None:
            continue
        xs += [p[x_key], *(p.get(f"{x_key}_ci") or [])]
        ys += [p[y_key], *(p.get(f"{y_key}_ci") or [])]
    for c in curves:
        for q in c["points"]:
            if q.get(x_key) is not None and q.get(y_key) is not None:
                xs.append(q[x_key])
                ys.append(q[y_key])
    if not xs:
        return None
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    dx, dy = (x1 - x0) or abs(x0) or 1.0, (y1 - y0) or abs(y0) or 1.0
    x0, x1, y0, y1 = x0 - 0.08 * dx, x1 + 0.08 * dx, y0 - 0.08 * dy, y1 + 0.08 * dy
    pw, ph = width - pad - 12, height - pad - 12

    def sx(v: float) -> float:
        return round(pad + pw * (v - x0) / (x1 - x0), 2)

    def sy(v: float) -> float:
        return round(12 + ph * (1 - (v - y0) / (y1 - y0)), 2)

    out_points = []
    for p in points:
        if p.get(x_key) is None or p.get(y_key) is None:
            continue
        yci, xci = p.get(f"{y_key}_ci"), p.get(f"{x_key}_ci")
        out_points.append({"id": p["id"], "href": p.get("href"), "cx": sx(p[x_key]), "cy": sy(p[y_key]),
                           "x": fmt(p[x_key]), "y": fmt(p[y_key]),
                           "y_lo": sy(yci[0]) if yci else None, "y_hi": sy(yci[1]) if yci else None,
                           "x_lo": sx(xci[0]) if xci else None, "x_hi": sx(xci[1]) if xci else None,
                           "ci": f"[{fmt(yci[0])}, {fmt(yci[1])}]" if yci else "no interval"})
    out_curves = []
    for c in curves:
        pts = [(sx(q[x_key]), sy(q[y_key])) for q in c["points"] if q.get(x_key) is not None
               and q.get(y_key) is not None]
        if pts:
            out_curves.append({"id": c["id"], "path": " ".join(f"{'M' if k == 0 else 'L'}{x},{y}"
                                                               for k, (x, y) in enumerate(pts)),
                               "dots": [{"cx": x, "cy": y, "label": fmt(q.get("factor"))}
                                        for (x, y), q in zip(pts, c["points"], strict=False)]})
    return {"width": width, "height": height, "points": out_points, "curves": out_curves,
            "xticks": [{"pos": sx(t), "label": fmt(float(t))} for t in _ticks(x0, x1) if x0 <= t <= x1],
            "yticks": [{"pos": sy(t), "label": fmt(float(t))} for t in _ticks(y0, y1) if y0 <= t <= y1],
            "left": pad, "bottom": height - pad, "right": width - 12, "top": 12}


def svg_polyline(xs: list[float | None], ys: list[float | None], width: float, height: float,
                 pad: float = 4.0) -> dict[str, Any]:
    """Points for an inline-SVG <polyline> scaled into a width×height box, plus the y range shown.

    Missing or non-finite values are skipped. Returns {"points": "x,y x,y ...", "ymin", "ymax"}.
    """
    pts = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None]
    if not pts:
        return {"points": "", "ymin": None, "ymax": None}
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    dx, dy = (x1 - x0) or 1.0, (y1 - y0) or 1.0
    w, h = width - 2 * pad, height - 2 * pad
    coords = " ".join(
        f"{pad + (x - x0) / dx * w:.1f},{pad + h - (y - y0) / dy * h:.1f}" for x, y in pts
    )
    return {"points": coords, "ymin": y0, "ymax": y1}
