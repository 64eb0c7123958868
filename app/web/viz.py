"""Small view helpers for the templates: heat levels for token colouring, SVG histogram bars, number format.

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
