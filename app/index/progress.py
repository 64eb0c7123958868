"""Progress lines with rate and ETA for the index pass and every finalise phase.

Like the harvester (app/training/harvest.py), progress goes to `logging`, at most every `every_s` seconds
plus one line when a phase ends, so a long phase is never silent and a log file stays short:

    index loss effects: 120/293 rows (41%), 0.8 rows/s, ETA 3m36s
    index loss effects: done, 293 rows in 6m05s
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("app.index")

PROGRESS_EVERY_S = 10.0  # seconds between two progress lines of one phase


def fmt_seconds(s: float) -> str:
    """12s, 3m05s, 2h07m."""
    s = max(0.0, s)
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


class Progress:
    """One phase of known size: `update(n)` as work is done, `close()` at the end (logs the total time).

    The ETA assumes the remaining units cost what the done ones did on average.
    """

    def __init__(self, phase: str, total: float, unit: str, every_s: float | None = None,
                 logger: logging.Logger | None = None) -> None:
        self.phase, self.total, self.unit = phase, float(total), unit
        self.every_s = PROGRESS_EVERY_S if every_s is None else every_s
        self.log = logger or log
        self.done = 0.0
        self.start = self.last = time.perf_counter()
        self.log.info("%s: %s %s to do", phase, _num(self.total), unit)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def update(self, n: float = 1) -> None:
        """Count n more units done; log a line when `every_s` passed since the last one."""
        self.done += n
        now = time.perf_counter()
        if now - self.last < self.every_s or self.done >= self.total:
            return
        self.last = now
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else float("inf")
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        self.log.info("%s: %s/%s %s (%.0f%%), %.3g %s/s, ETA %s", self.phase, _num(self.done), _num(self.total),
                      self.unit, 100 * self.done / max(self.total, 1), rate, self.unit,
                      fmt_seconds(eta) if eta != float("inf") else "?")

    def close(self) -> float:
        """Log the phase's end and return its seconds."""
        s = self.seconds
        self.log.info("%s: done, %s %s in %s", self.phase, _num(self.done), self.unit, fmt_seconds(s))
        return s


def _num(x: float) -> str:
    return f"{int(x)}" if float(x).is_integer() else f"{x:.1f}"
