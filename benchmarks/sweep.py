"""LM time of a training sweep against one run (issue 12 point 4), measured in the same process.

    .venv/bin/python -m benchmarks.sweep [--d-model 512 --n-layers 8 --tokens 16384 --d-sae 1024 --n 4]

One run trains an SAE at the last block's resid_post; the sweep trains --n SAEs at hooks spread over the
layers (the deepest is the same last block) from one LM pass (`jumpscope train --layer a,b,c,d`). The LM time
of each is the harvester's time in LM forwards (summary.json `lm_seconds`: capture to the deepest hook plus the
per-hook outlier masks and copies). The model is a random Llama built from a config (no download); the corpus
random sentences over the benchmark words. Target: sweep LM time / one run's LM time ≤ 1.3.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import tempfile
import time
from pathlib import Path

from app.training.config import TrainConfig
from app.training.sweep import sweep_configs, train_sweep
from app.training.trainer import train
from benchmarks.server import WORDS

TARGET = 1.3


def _corpus(path: Path, n_docs: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    words = WORDS.split() if isinstance(WORDS, str) else list(WORDS)
    path.write_text("\n\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(40, 200)))
                                for _ in range(n_docs)))
    return path


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--d-model", type=int, default=512)
    p.add_argument("--n-layers", type=int, default=8)
    p.add_argument("--tokens", type=int, default=16384)
    p.add_argument("--d-sae", type=int, default=1024)
    p.add_argument("--n", type=int, default=4, help="SAEs in the sweep")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from app.lm.tiny import save_tiny_model, train_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tok = train_tokenizer([" ".join(WORDS)] * 50, vocab_size=400)
        model = save_tiny_model(root / "model", "llama", tok, d_model=args.d_model, n_layers=args.n_layers,
                                n_heads=max(1, args.d_model // 64), max_positions=1024)
        corpus = _corpus(root / "corpus.txt", n_docs=max(200, args.tokens // 40))
        layers = sorted({round((k + 1) * args.n_layers / args.n) - 1 for k in range(args.n)})
        base = dict(model=str(model), corpus=str(corpus), hook="resid_post", context_size=128, d_sae=args.d_sae,
                    target_l0=32.0, tokens=args.tokens, batch_size=1024, buffer_tokens=8192, device=args.device,
                    progress=False, checkpoint_every=0)
        t0 = time.perf_counter()
        one = train(TrainConfig(**base, layer=layers[-1], out=str(root / "one")))
        wall_one = time.perf_counter() - t0
        single = json.loads((one / "summary.json").read_text())
        t0 = time.perf_counter()
        runs = train_sweep(sweep_configs(base | {"layer": layers, "out": str(root / "sweep")}), root / "sweep")
        wall_sweep = time.perf_counter() - t0
        swept = [json.loads((r / "summary.json").read_text()) for r in runs]
    lm_one, lm_sweep = single["lm_seconds"], swept[0]["lm_seconds"]
    result = {"d_model": args.d_model, "n_layers": args.n_layers, "tokens": args.tokens, "d_sae": args.d_sae,
              "sweep_layers": layers, "lm_seconds_one": lm_one, "lm_seconds_sweep": lm_sweep,
              "lm_ratio": lm_sweep / lm_one, "wall_ratio": wall_sweep / wall_one, "target": TARGET}
    print(json.dumps(result, indent=2))
    print(f"sweep of {len(runs)} / one run, LM time: {result['lm_ratio']:.2f}x (target <= {TARGET}); "
          f"wall time: {result['wall_ratio']:.2f}x")
    return result


if __name__ == "__main__":
    main()
