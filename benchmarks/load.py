"""Load test: many concurrent clients over encode, dashboard and steer against a real local server.

Starts `jumpscope serve` as a subprocess on 127.0.0.1 (ephemeral port) on the demo bundle when it is available
(or a tiny random model + SAE built here with --tiny / when it is not), then drives `--clients` concurrent
clients for `--duration` seconds, each cycling through POST /api/encode, GET /api/saes/{sae}/latents/{i}
(random latent) and POST /api/steer. Prints one JSON line: requests, errors (must be 0), throughput,
p50/p99 per route, and the server's RSS before (after warm-up) and after the run, plus its peak.

    .venv/bin/python -m benchmarks.load                       # 32 clients × 60 s
    .venv/bin/python -m benchmarks.load --tiny --clients 8 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.server import WORDS, demo_fixture, start_server, tiny_fixture

ROUTES = ("encode", "dashboard", "steer")


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Load:
    """Per-route latencies and errors of one run."""

    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = {r: [] for r in ROUTES}
        self.errors: dict[str, int] = {r: 0 for r in ROUTES}
        self.error_samples: list[str] = []

    def record(self, route: str, ms: float, ok: bool, what: str = "") -> None:
        self.latencies[route].append(ms)
        if not ok:
            self.errors[route] += 1
            if len(self.error_samples) < 5:
                self.error_samples.append(f"{route}: {what[:200]}")


async def _one(client: httpx.AsyncClient, route: str, sae: str, d_sae: int, rng: random.Random,
               steer_tokens: int, load: Load) -> None:
    words = rng.choices(WORDS, k=rng.randint(8, 40))
    t0 = time.perf_counter()
    try:
        if route == "encode":
            r = await client.post("/api/encode", json={"text": " ".join(words), "sae": sae, "top_k": 8})
        elif route == "dashboard":
            r = await client.get(f"/api/saes/{sae}/latents/{rng.randrange(d_sae)}")
        else:
            r = await client.post("/api/steer", json={
                "prompt": " ".join(words[:12]), "sae": sae, "max_new_tokens": steer_tokens, "temperature": 0.7,
                "seed": rng.randrange(1000), "interventions": [
                    {"latent": rng.randrange(d_sae), "mode": rng.choice(["clamp", "add", "ablate"]), "value": 4.0}]})
        ok, what = r.status_code == 200, f"{r.status_code} {r.text}"
    except httpx.HTTPError as e:
        ok, what = False, f"{type(e).__name__}: {e}"
    load.record(route, (time.perf_counter() - t0) * 1000, ok, what)


async def drive(base: str, clients: int, duration: float, steer_tokens: int, seed: int = 0) -> tuple[Load, float]:
    """`clients` concurrent clients, each cycling encode → dashboard → steer until `duration` has passed."""
    async with httpx.AsyncClient(base_url=base, timeout=120,
                                 limits=httpx.Limits(max_connections=clients + 4)) as client:
        saes = (await client.get("/api/saes")).json()
        sae, d_sae = saes[0]["id"], saes[0]["d_sae"]
        load = Load()
        deadline = time.monotonic() + duration

        async def worker(k: int) -> None:
            rng = random.Random(seed * 1000 + k)
            i = k % len(ROUTES)  # clients start on different routes so all three are always in flight
            while time.monotonic() < deadline:
                await _one(client, ROUTES[i % len(ROUTES)], sae, d_sae, rng, steer_tokens, load)
                i += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(clients)))
        return load, time.perf_counter() - t0


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 2) if s else 0.0


def run(clients: int, duration: float, tiny: bool, steer_tokens: int) -> dict:
    """One load run; returns the result dict (also what the CI test checks)."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = None if tiny else demo_fixture()
        source = "demo" if paths else "tiny"
        model, sae = paths or tiny_fixture(Path(tmp))
        env = {"JUMPSCOPE_MAX_NEW_TOKENS": str(max(steer_tokens, 1)), "JUMPSCOPE_MAX_PROMPT_TOKENS": "256"}
        server, base = start_server(model, sae, Path(tmp) / "data", env)
        try:
            peak = 0.0
            # Warm-up: every route a few times, so one-off allocations are in the "before" figure.
            asyncio.run(drive(base, min(clients, 3), 1.0, steer_tokens, seed=99))
            before = rss_mb(server.pid)

            async def sampled() -> tuple[Load, float]:
                nonlocal peak
                task = asyncio.create_task(drive(base, clients, duration, steer_tokens))
                while not task.done():
                    peak = max(peak, rss_mb(server.pid))
                    await asyncio.sleep(0.5)
                return await task

            load, wall = asyncio.run(sampled())
            after = rss_mb(server.pid)
            alive = server.poll() is None
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    total = sum(len(v) for v in load.latencies.values())
    return {
        "source": source, "clients": clients, "duration_s": round(wall, 2), "steer_new_tokens": steer_tokens,
        "requests": total, "errors": sum(load.errors.values()), "server_alive": alive,
        "throughput_rps": round(total / wall, 2),
        "routes": {r: {"requests": len(v), "errors": load.errors[r], "p50_ms": _pct(v, 0.5),
                       "p99_ms": _pct(v, 0.99), "mean_ms": round(statistics.fmean(v), 2) if v else 0.0}
                   for r, v in load.latencies.items()},
        "rss_before_mb": round(before, 1), "rss_after_mb": round(after, 1), "rss_peak_mb": round(peak, 1),
        "rss_growth_ratio": round(after / before, 3),
        "error_samples": load.error_samples,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=32, help="concurrent clients")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    ap.add_argument("--tiny", action="store_true", help="a tiny random model + SAE instead of the demo bundle")
    ap.add_argument("--steer-tokens", type=int, default=16, help="max_new_tokens of each steer request")
    args = ap.parse_args()
    if args.clients < 1 or args.duration <= 0:
        raise SystemExit("--clients must be ≥ 1 and --duration > 0")
    print(json.dumps(run(args.clients, args.duration, args.tiny, args.steer_tokens)))


if __name__ == "__main__":
    main()
