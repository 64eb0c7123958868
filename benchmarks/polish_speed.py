"""The polish's speed and what its screen costs: `polish_rows` on one dictionary and one token sample, with matching
pursuit choosing among every row and among each token's `screen` most correlated rows.

    python -m benchmarks.polish_speed --sae DIR --activations FILE [--k K] [--tokens 262144] [--held 65536]
                                      [--screens 0 64 128 256] [--epochs 2] [--threads 1]

It starts from the SAE's decoder rows, codes the tokens about its b_dec with k = --k or the run's target L0 (as
`jumpscope train --polish-share` does), and for each screen (0: none) reports the polish's seconds, the speed-up
over the first screen listed (by default 0, no screen), and matching pursuit's FVU with the polished rows on the
`--held` tokens that follow (each dictionary coded without a screen, so the comparison is of the rows alone). The
last stdout line is one JSON object: {"k", "rows", "tokens", "runs": [{"screen", "seconds", "speed_up",
"held_fvu", "held_fvu_ratio"}]}.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from app.sae import load_sae
from app.training.config import CONFIG_FILE
from app.training.polish import polish_rows, sparse_omp
from benchmarks.real_dead_latents import read_rows

log = logging.getLogger(__name__)


def _tokens(path: Path, n: int) -> torch.Tensor:
    x = read_rows(path, 0, n)
    if x.shape[0] < n:
        raise SystemExit(f"{path} holds {x.shape[0]} tokens; --tokens + --held need {n}")
    return x


def _target_l0(folder: Path) -> int:
    try:
        return round(float(json.loads((folder / CONFIG_FILE).read_text())["target_l0"]))
    except (OSError, ValueError, KeyError, TypeError):
        raise SystemExit(f"{folder / CONFIG_FILE} gives no target L0; pass --k") from None


def held_fvu(rows: torch.Tensor, x: torch.Tensor, k: int) -> float:
    """Matching pursuit's FVU with `rows` on `x` (every row a candidate)."""
    _, _, residual = sparse_omp(x, rows, k)
    return (residual.pow(2).sum() / x.pow(2).sum()).item()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sae", type=Path, required=True, help="an SAE folder")
    ap.add_argument("--k", type=int, default=None, help="rows a token (default: the run's target L0)")
    ap.add_argument("--activations", type=Path, required=True)
    ap.add_argument("--tokens", type=int, default=262_144, help="tokens the polish codes")
    ap.add_argument("--held", type=int, default=65_536, help="tokens after them, to score the polished rows")
    ap.add_argument("--screens", type=int, nargs="+", default=[0, 64, 128, 256])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    sae = load_sae(args.sae, device="cpu")
    k = args.k if args.k is not None else _target_l0(args.sae)
    x = _tokens(args.activations, args.tokens + args.held) - sae.b_dec.detach().float()
    train, held = x[:args.tokens], x[args.tokens:]
    start = sae.W_dec.detach().float()
    runs = []
    for screen in args.screens:
        t = time.perf_counter()
        rows = polish_rows(start, train, k, args.epochs, screen=screen or None)
        seconds = time.perf_counter() - t
        runs.append({"screen": screen, "seconds": seconds, "held_fvu": held_fvu(rows, held, k)})
        log.info("screen %d: %.1f s, held-out matching-pursuit FVU %.4f", screen, seconds, runs[-1]["held_fvu"])
    base = runs[0]
    for run in runs:
        run["speed_up"] = base["seconds"] / run["seconds"]
        run["held_fvu_ratio"] = run["held_fvu"] / base["held_fvu"]
    print(json.dumps({"k": k, "rows": start.shape[0], "tokens": args.tokens, "runs": runs}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
