"""Serving latency of the web app: p50/p99 of POST /api/encode (128-token prompt) and POST /api/steer
(32 new tokens) with 1 and 16 concurrent clients, plus errors (must be 0).

The server runs as a real `jumpscope serve` subprocess on the demo bundle (or, with --tiny or when the demo
is unavailable, a tiny random model + SAE built here). For a machine-independent figure the same run also
times the service functions called directly in this process on the same model, and reports
`http_overhead_ratio` = HTTP p50 / direct p50.

    .venv/bin/python -m benchmarks.serve_latency [--tiny] [--requests 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.server import WORDS, demo_fixture, start_server, tiny_fixture


def prompt_of(n_tokens: int, count) -> str:
    """A text whose tokenisation (with BOS) is exactly `n_tokens` long, found by growing word by word."""
    words: list[str] = []
    k = 0
    while True:
        words.append(WORDS[k % len(WORDS)])
        k += 1
        n = count(" ".join(words))
        if n >= n_tokens:
            while count(" ".join(words)) > n_tokens and len(words) > 1:
                words.pop()
            return " ".join(words)


async def measure(base: str, path: str, body: dict, clients: int, requests: int) -> dict:
    """Latencies (ms) of `requests` POSTs spread over `clients` concurrent connections."""
    latencies: list[float] = []
    errors = 0
    queue = list(range(requests))

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while queue:
            queue.pop()
            t0 = time.perf_counter()
            r = await client.post(path, json=body)
            latencies.append((time.perf_counter() - t0) * 1000)
            errors += r.status_code != 200

    async with httpx.AsyncClient(base_url=base, timeout=300) as client:
        await client.post(path, json=body)  # warm-up
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        wall = time.perf_counter() - t0
    latencies.sort()
    return {"clients": clients, "requests": requests, "errors": errors,
            "p50_ms": round(statistics.median(latencies), 2),
            "p99_ms": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 2),
            "throughput_rps": round(requests / wall, 2)}


def direct_p50(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="use a tiny random model instead of the demo")
    ap.add_argument("--requests", type=int, default=64, help="encode requests per setting (steer: a quarter)")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    paths = None if args.tiny else demo_fixture()
    source = "demo" if paths else "tiny"
    model, sae = paths or tiny_fixture(Path(tmp.name))

    from app.encoding import encode_text
    from app.lm import load_lm
    from app.sae import load_sae
    from app.steering import Intervention, steer

    lm = load_lm(model, device="cpu")
    sae_obj = load_sae(sae, device="cpu").requires_grad_(False)
    prompt = prompt_of(128, lambda t: len(lm.token_ids(t)))
    steer_prompt = prompt_of(16, lambda t: len(lm.token_ids(t)))
    interventions = [{"latent": 1, "mode": "clamp", "value": 5.0}]
    steer_body = {"prompt": steer_prompt, "interventions": interventions, "max_new_tokens": 32,
                  "temperature": 0.7, "seed": 0}

    env = {"JUMPSCOPE_MAX_PROMPT_TOKENS": "512", "JUMPSCOPE_MAX_NEW_TOKENS": "64"}
    server, base = start_server(model, sae, Path(tmp.name) / "data", env)
    try:
        results = {"source": source, "model": model, "encode_prompt_tokens": len(lm.token_ids(prompt)),
                   "steer_new_tokens": 32, "torch_threads": __import__("torch").get_num_threads()}
        n_steer = max(4, args.requests // 4)
        for clients in (1, 16):
            results[f"encode_{clients}"] = asyncio.run(measure(base, "/api/encode", {"text": prompt}, clients,
                                                               args.requests))
            results[f"steer_{clients}"] = asyncio.run(measure(base, "/api/steer", steer_body, clients, n_steer))
    finally:
        server.terminate()
        server.wait(timeout=30)

    ivs = [Intervention(**iv) for iv in interventions]
    enc_direct = direct_p50(lambda: encode_text(lm, sae_obj, prompt, max_tokens=512), 20)
    steer_direct = direct_p50(lambda: steer(lm, sae_obj, steer_prompt, ivs, max_new_tokens=32, seed=0), 5)
    results["encode_direct_p50_ms"] = round(enc_direct, 2)
    results["steer_direct_p50_ms"] = round(steer_direct, 2)
    results["encode_http_overhead_ratio"] = round(results["encode_1"]["p50_ms"] / enc_direct, 2)
    results["steer_http_overhead_ratio"] = round(results["steer_1"]["p50_ms"] / steer_direct, 2)
    results["errors"] = sum(v["errors"] for k, v in results.items() if isinstance(v, dict))
    print(json.dumps(results, indent=2))
    tmp.cleanup()


if __name__ == "__main__":
    main()
