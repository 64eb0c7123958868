"""The CI form of benchmarks/load.py: a real `jumpscope serve` subprocess on a tiny model, 8 concurrent clients
for 5 s over encode, dashboard and steer. Asserts correctness under concurrency — zero errors, every route
served, the server alive, bounded memory growth — never timing (figures come from the full benchmark)."""

from __future__ import annotations

import pytest

from benchmarks.load import ROUTES, run


@pytest.mark.timeout(300)
def test_short_load_has_no_errors_and_bounded_memory():
    result = run(clients=8, duration=5.0, tiny=True, steer_tokens=4)
    assert result["errors"] == 0, result["error_samples"]
    assert result["server_alive"]
    for route in ROUTES:
        assert result["routes"][route]["requests"] > 0, f"{route} was never exercised: {result}"
    # Memory after the run stays near memory after warm-up (no per-request leak): generous, not a timing bound.
    assert result["rss_after_mb"] <= 1.5 * result["rss_before_mb"] + 64, result
