"""What-if latency (one latent at θ') against one encode of the sample and a full re-evaluation, same run.

    .venv/bin/python -m benchmarks.whatif [--sae DIR] [--corpus PATH] [--tokens 2048] [--latents 20]

Default SAE: the demo bundle in the cache (`jumpscope demo build`). Reports the median what-if time (with ΔLM
loss: spliced forwards of the changed contexts only), the one-off cache build time, and the ratios
`whatif / encode` (one SAE encode of the whole sample) and `whatif / full` (re-encode + a spliced LM pass over
the whole sample, what a what-if without the cache would cost). The issue asks for well under a second on the
demo; the ratios say how that scales.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from app.demo.bundle import DemoBundle, bundle_root
from app.lm import load_lm
from app.sae import load_sae
from app.workbench.dial import dial_point
from app.workbench.registry import SampleCaches
from app.workbench.whatif import what_if


def _median_time(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sae", help="SAE folder (default: the demo bundle's)")
    ap.add_argument("--corpus", help="sample corpus (default: the SAE's held-out split or index corpus)")
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--latents", type=int, default=20, help="latents timed (evenly spread over the live latents "
                    "ranked by activity, the most active included)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    folder = args.sae or str(DemoBundle.at(bundle_root()).sae_dir)
    sae = load_sae(folder)
    lm = load_lm(sae.cfg.metadata["model_name"], device=args.device)
    sae = sae.to(lm.device)
    sae.requires_grad_(False)
    caches = SampleCaches(tokens=args.tokens, corpus=args.corpus)
    t0 = time.perf_counter()
    cache = caches.get(lm, sae, folder)
    build = time.perf_counter() - t0
    active = (cache.pre > cache.theta).sum(0)
    ranked = [i for i in torch.argsort(active, descending=True).tolist() if active[i] > 0]
    step = max(1, len(ranked) // args.latents)
    latents = ranked[::step][: args.latents]
    per_call = []
    changed = []
    for i in latents:
        theta = float(cache.theta[i])
        for factor in (0.5, 1.5):
            t0 = time.perf_counter()
            r = what_if(lm, sae, cache, i, theta * factor)
            per_call.append(time.perf_counter() - t0)
            changed.append(r.get("rerun_contexts", 0))
    h = cache.h.to(sae.device)
    with torch.inference_mode():
        encode = _median_time(lambda: sae.encode(h))
        full = _median_time(lambda: dial_point(lm, sae, cache, sae.threshold * 0.9), repeat=3)
    med = statistics.median(per_call)
    print(json.dumps({
        "sae": folder, "d_sae": sae.d_sae, "sample_tokens": cache.n_tokens,
        "sample_contexts": int(cache.contexts.shape[0]), "cache_build_s": round(build, 3),
        "whatif_median_s": round(med, 4), "whatif_max_s": round(max(per_call), 4),
        "rerun_contexts_median": statistics.median(changed),
        "encode_s": round(encode, 5), "full_reeval_s": round(full, 4),
        "whatif_over_encode": round(med / encode, 2), "whatif_over_full": round(med / full, 3),
    }))


if __name__ == "__main__":
    main()
