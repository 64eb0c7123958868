"""`jumpscope dial`: the sparsity dial — scale every threshold by a factor and see L0, FVU and ΔLM loss.

    jumpscope dial --sae DIR (--factors 0.5,1,2 | --target-l0 N) [--save OUT [--set LATENT=THETA ...]]
                   [--corpus PATH] [--tokens N]

Scores a held-out sample (the training record's held-out split, else the index's corpus, else --corpus; see
app/workbench/sample.py). `--target-l0` searches the factor by bisection; `--save OUT` writes the SAE with the
scaled thresholds (the factor found, or the only factor given) as a new SAE folder with provenance in cfg.json.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from app.cli.common import CLIError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dial", help="scale all JumpReLU thresholds: L0 / FVU / ΔLM loss along the curve; save one",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--sae", required=True, help="SAE folder (native/SAELens), Gemma Scope params.npz, "
                   "hf://OWNER/REPO/PATH or saelens://RELEASE/SAE_ID")
    p.add_argument("--model", help="LM folder, .gguf file or hub id (default: the SAE's metadata model_name)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--factors", help="comma-separated threshold factors, e.g. 0.5,1,2")
    what.add_argument("--target-l0", type=float, help="search the factor whose L0 on the sample is closest to N")
    p.add_argument("--save", help="write the SAE with scaled thresholds to this new folder")
    p.add_argument("--set", action="append", default=[], metavar="LATENT=THETA",
                   help="with --save: also give one latent its own threshold (repeatable), e.g. --set 12=0.4")
    p.add_argument("--corpus", help="corpus to sample (default: the training record's held-out split, else the "
                   "index's corpus)")
    p.add_argument("--tokens", type=int, default=2048, help="sample size in tokens (default 2048)")
    p.add_argument("--no-lm-loss", action="store_true", help="skip ΔLM loss (no LM forwards per point)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def _factors(raw: str) -> list[float]:
    try:
        values = [float(x) for x in raw.replace(" ", "").split(",") if x]
    except ValueError:
        raise CLIError(f"--factors must be comma-separated numbers, got {raw!r}") from None
    if not values:
        raise CLIError("--factors is empty")
    return values


def _edits(items: list[str]) -> dict[int, float]:
    out: dict[int, float] = {}
    for item in items:
        try:
            latent, value = item.split("=", 1)
            out[int(latent)] = float(value)
        except ValueError:
            raise CLIError(f"--set takes LATENT=THETA, got {item!r}") from None
        if not out[int(latent)] >= 0 or out[int(latent)] == float("inf"):
            raise CLIError(f"--set {item}: the threshold must be a finite number ≥ 0")
    return out


def run(args: argparse.Namespace) -> int:
    if args.tokens < 1:
        raise CLIError(f"--tokens must be ≥ 1, got {args.tokens}")
    factors = _factors(args.factors) if args.factors else None
    if args.save and factors is not None and len(factors) != 1:
        raise CLIError("--save needs one factor (or --target-l0): which point of the curve should be saved?")
    edits = _edits(args.set)
    if edits and not args.save:
        raise CLIError("--set edits a saved SAE: give --save OUT")
    from app.sae.hub import resolve_sae_ref

    args.sae = str(resolve_sae_ref(args.sae))  # hf:// and saelens:// → their workspace folder (fetched once)
    if not Path(args.sae).exists():
        raise CLIError(f"--sae {args.sae}: no such file or folder")
    from app.lm import load_lm
    from app.sae import load_sae
    from app.workbench.cache import build_cache
    from app.workbench.dial import dial_curve, factor_for_l0, save_edited, scaled_thresholds
    from app.workbench.registry import sample_context_size
    from app.workbench.sample import choose_sample, load_sample

    sae = load_sae(args.sae)
    model = args.model or sae.cfg.metadata.get("model_name")
    if not model:
        raise CLIError("the SAE's metadata has no model_name; pass --model")
    folder = Path(args.sae) if Path(args.sae).is_dir() else Path(args.sae).parent
    spec = choose_sample(folder, sample_context_size(sae, folder), args.tokens, args.corpus, folder / "index.db")
    lm = load_lm(model, device=args.device)
    sae = sae.to(lm.device)
    sae.requires_grad_(False)
    contexts, split = load_sample(lm, spec)
    cache = build_cache(lm, sae, contexts, split)
    if args.target_l0 is not None:
        factors = [factor_for_l0(sae, cache, args.target_l0)]
    curve = dial_curve(lm, sae, cache, factors, lm_loss=not args.no_lm_loss)
    result = {"sae": str(args.sae), "baseline": cache.baseline(), "curve": curve, "sample": split}
    if args.save:
        s = curve[0]["factor"]
        edit = {"factor": s, **({"target_l0": args.target_l0} if args.target_l0 is not None else {})}
        theta = scaled_thresholds(sae, s)
        bad = [i for i in edits if not 0 <= i < sae.d_sae]
        if bad:
            raise CLIError(f"--set latent {bad[0]} is out of range: this SAE has latents 0..{sae.d_sae - 1}")
        for i, value in edits.items():
            theta[i] = value
        if edits:
            edit["latents"] = {str(i): float(theta[i]) for i in sorted(edits)}
        result["saved"] = str(save_edited(sae, theta, args.save, folder, edit))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"sample: {cache.n_tokens} tokens of {split.get('corpus')} ({split.get('part')}, "
              f"{split.get('origin')})")
        print(f"{'factor':>10} {'L0':>10} {'FVU':>10} {'ΔLM loss':>10}")
        for p in curve:
            dl = "n/a" if p["delta_lm_loss"] is None else f"{p['delta_lm_loss']:.4f}"
            print(f"{p['factor']:>10.4g} {p['l0']:>10.3f} {p['fvu']:>10.4f} {dl:>10}")
        if args.save:
            print(f"saved {result['saved']}")
    return 0
