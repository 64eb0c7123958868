"""The model service: calls are serialised, the event loop keeps running, SAEs can be registered live."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest


def test_calls_are_serialised_and_loop_stays_free(services):
    active, peak = 0, 0
    guard = threading.Lock()

    def slow(i: int) -> int:
        nonlocal active, peak
        with guard:
            active += 1
            peak = max(peak, active)
        time.sleep(0.02)
        with guard:
            active -= 1
        return i

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        t = asyncio.create_task(ticker())
        results = await asyncio.gather(*(services.run(slow, i) for i in range(8)))
        t.cancel()
        return results, ticks

    results, ticks = asyncio.run(main())
    assert results == list(range(8))
    assert peak == 1  # never two model calls at once
    assert ticks >= 5  # the event loop kept running while the calls waited and ran


def test_concurrent_requests_agree(app):
    import httpx

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            reqs = [c.post("/api/encode", json={"text": "The red fox jumps"}) for _ in range(6)]
            reqs += [c.post("/api/steer", json={"prompt": "The fox", "max_new_tokens": 4, "seed": 2})
                     for _ in range(4)]
            return await asyncio.gather(*reqs)

    out = asyncio.run(main())
    assert all(r.status_code == 200 for r in out)
    assert len({r.text for r in out[:6]}) == 1 and len({r.text for r in out[6:]}) == 1


def test_register_sae_live(client, services, tmp_path, tiny_model_dir):
    from tests.steering.helpers import make_sae

    sae = make_sae(32, 16, seed=9)
    sae.save(tmp_path / "new sae!")
    new_id = services.register_sae(tmp_path / "new sae!")
    try:
        assert new_id == "new-sae"
        assert "new-sae" in client.get("/api/health").json()["saes"]
        assert services.register_sae(tmp_path / "new sae!") == new_id  # re-register refreshes in place
        r = client.post("/api/encode", json={"text": "The fox", "sae": "new-sae"})
        assert r.status_code == 200
        wide = make_sae(24, 8)
        wide.save(tmp_path / "wide")
        with pytest.raises(ValueError, match="d_model"):
            services.register_sae(tmp_path / "wide")
    finally:
        services.saes.pop(new_id, None)
