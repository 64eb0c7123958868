"""Following a training job's metrics.jsonl: incremental reads, progress, and a small series for the plot.

The trainer appends one JSON object per logged step (`step`, `total_steps`, `loss`, `l0`, ...). Reads are
incremental (we remember the byte offset) and tolerate a half-written last line, a file that is truncated
or replaced (a resumed run, or the SAE folder being swapped in atomically) and non-JSON garbage.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
PLOT_KEYS = ("loss", "l0")


class MetricsTail:
    """Incrementally parsed rows of one metrics.jsonl file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        self._offset = 0
        self._inode: int | None = None
        self._partial = b""

    def refresh(self) -> list[dict[str, Any]]:
        """Read whatever was appended since the last call; returns all rows so far (restarts folded)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return self.rows  # not written yet, or briefly absent while the folder is swapped
        if st.st_ino != self._inode or st.st_size < self._offset:
            # A new file (folder swapped) or a truncated one (resume rewrote it): start over.
            self._inode, self._offset, self._partial, self.rows = st.st_ino, 0, b"", []
        if st.st_size == self._offset:
            return self.rows
        with open(self.path, "rb") as fh:
            fh.seek(self._offset)
            chunk = fh.read(st.st_size - self._offset)
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # '' when the chunk ended with a newline, else an unfinished line
        for line in lines:
            row = _parse(line)
            if row is not None:
                _append(self.rows, row)
        return self.rows

    @property
    def latest(self) -> dict[str, Any]:
        """The last complete row ({} before the first)."""
        return self.rows[-1] if self.rows else {}


def _parse(line: bytes) -> dict[str, Any] | None:
    line = line.strip()
    if not line:
        return None
    try:
        row = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        log.debug("skipping a malformed metrics line: %r", line[:80])
        return None
    return {str(k): _finite(v) for k, v in row.items()} if isinstance(row, dict) else None


def _finite(v: Any) -> Any:
    """NaN/inf (a diverged run) become None so every row stays valid JSON for the API."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v


def _append(rows: list[dict[str, Any]], row: dict[str, Any]) -> None:
    """Append, dropping rows a resumed run re-logs (a step not after the previous one starts a new run)."""
    step = _num(row.get("step"))
    if step is not None:
        while rows:
            prev = _num(rows[-1].get("step"))
            if prev is None or prev < step:
                break
            rows.pop()
    rows.append(row)


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def progress_of(row: dict[str, Any]) -> float:
    """step / total_steps clipped to 0..1 (0 when the row lacks them)."""
    step, total = _num(row.get("step")), _num(row.get("total_steps"))
    if step is None or not total or total <= 0:
        return 0.0
    return max(0.0, min(1.0, step / total))


def series(rows: list[dict[str, Any]], keys: tuple[str, ...] = PLOT_KEYS, max_points: int = 200) -> dict[str, Any]:
    """{"step": [...], key: [...]} for the plot, evenly thinned to at most `max_points` (last row kept)."""
    if len(rows) > max_points:
        stride = len(rows) / max_points
        picked = [rows[int(i * stride)] for i in range(max_points - 1)] + [rows[-1]]
    else:
        picked = rows
    out: dict[str, Any] = {"step": [_num(r.get("step")) for r in picked]}
    for k in keys:
        out[k] = [_num(r.get(k)) for r in picked]
    return out

