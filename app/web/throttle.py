"""A per-client throttle for failed admin logins and bearer tokens (in memory, sliding one-minute window).

After `limit` failures within `window` seconds from one client address, every further credential check from
that address is answered 429 with Retry-After until the oldest failure leaves the window — the right token
included, so a blocked client learns nothing.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque


class FailureThrottle:
    """Counts authentication failures per client address."""

    def __init__(self, limit: int = 10, window: float = 60.0, max_clients: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self.max_clients = max_clients
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, client: str, now: float | None = None) -> int | None:
        """Seconds this client must wait before its next attempt; None when it may try now."""
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._recent(client, now)
            if times is None or len(times) < self.limit:
                return None
            return max(1, math.ceil(times[0] + self.window - now))

    def record_failure(self, client: str, now: float | None = None) -> None:
        """Note one failed attempt from this client."""
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._recent(client, now)
            if times is None:
                if len(self._failures) >= self.max_clients:
                    self._prune(now)
                    if len(self._failures) >= self.max_clients:  # still full: forget the oldest client
                        self._failures.pop(next(iter(self._failures)))
                times = self._failures[client] = deque()
            times.append(now)
            while len(times) > self.limit:
                times.popleft()

    def _recent(self, client: str, now: float) -> deque[float] | None:
        times = self._failures.get(client)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[client]
            return None
        return times

    def _prune(self, now: float) -> None:
        for client in list(self._failures):
            self._recent(client, now)
