"""Built-in explainer cost ÷ index pass cost, same run, same SAE.

    .venv/bin/python -m benchmarks.explain                       # CPU: small Llama-shaped model, 4k latents
    .venv/bin/python -m benchmarks.explain --tokens 1048576 --d-sae 16384

Builds a real index (`run_index`, loss effects off, like benchmarks/index_throughput.py) of a random SAE
calibrated to fire on ~1 % of tokens, then runs `run_explain(db, "builtin")` over every latent (read windows,
label, model-free held-out score, store). Prints one JSON line:

* `ratio_to_pass`: explain seconds ÷ the index's LM pass seconds (meta `pass_seconds`; the issue's measure),
* `ratio_to_index`: explain seconds ÷ the whole `run_index` wall time (pass + finalize),
* `ms_per_latent`: explain cost per explained latent. It does not grow with the tokens indexed (each latent
  keeps a fixed number of windows) while the pass does, so the ratio falls as the index reads more text.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from app.explain.runner import run_explain
from app.index.activations import corpus_rows
from app.index.builder import run_index
from app.index.config import IndexConfig
from app.index.store import connect, get_meta
from benchmarks.index_throughput import calibrated_sae, make_corpus, make_lm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=262144, help="tokens indexed")
    ap.add_argument("--d-sae", type=int, default=4096)
    ap.add_argument("--context-size", type=int, default=128)
    ap.add_argument("--batch-contexts", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--gemma2-2b", action="store_true", help="Gemma-2-2B-shaped model, hook at layer 12")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    ctx = args.context_size
    n_rows = -(-args.tokens // ctx)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        corpus, sample = make_corpus(Path(tmp), max(200, n_rows * ctx // 80))
        lm = make_lm(sample, args.gemma2_2b, args.device)
        hook = ("resid_post", 12 if args.gemma2_2b else 2)
        rows = torch.tensor(list(corpus_rows(lm, corpus, ctx, 0, 8)), dtype=torch.long)
        sae = calibrated_sae(lm, hook, args.d_sae, rows)
        cfg = IndexConfig(context_size=ctx, batch_contexts=args.batch_contexts, loss_effects=False)
        db = Path(tmp) / "index.db"
        t0 = time.perf_counter()
        run_index(lm, sae, corpus, n_rows * ctx, db, cfg)
        index_s = time.perf_counter() - t0
        with connect(db, readonly=True) as conn:
            pass_s = float(get_meta(conn, "pass_seconds"))
        t0 = time.perf_counter()
        counts = run_explain(db, "builtin")
        explain_s = time.perf_counter() - t0
    print(json.dumps({
        "tokens": n_rows * ctx, "d_sae": args.d_sae, "device": str(lm.device),
        "index_s": round(index_s, 2), "pass_s": round(pass_s, 2), "explain_s": round(explain_s, 2),
        "ratio_to_pass": round(explain_s / pass_s, 4), "ratio_to_index": round(explain_s / index_s, 4),
        "explained": counts.explained, "dead": counts.dead,
        "ms_per_latent": round(1000 * explain_s / max(counts.explained, 1), 2),
        "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "load_avg": [round(load_before, 1), round(os.getloadavg()[0], 1)],
    }))


if __name__ == "__main__":
    main()
