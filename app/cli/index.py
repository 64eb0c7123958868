"""`jumpscope index`: build (resume, extend) the latent-dashboard index of an SAE over a corpus."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from app.cli.common import CLIError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "index", help="one LM pass over a corpus → latent dashboards in SQLite",
        description="Gather top examples, interval samples, histograms, logit effects and neighbours for every "
                    "latent in one pass. --tokens is the total: rerun with the same value to resume a killed "
                    "run, or with a larger one to extend the index.",
    )
    p.add_argument("--sae", required=True, help="SAE folder, Gemma Scope params.npz, "
                   "hf://OWNER/REPO/PATH or saelens://RELEASE/SAE_ID")
    p.add_argument("--corpus", required=True, help="text/JSONL/Parquet file or folder, or hf:NAME[:split]")
    p.add_argument("--tokens", required=True, type=int, help="total tokens to index (rounded up to whole rows)")
    p.add_argument("--model", help="HF model folder, .gguf file or hub id (default: the SAE's metadata model_name)")
    p.add_argument("--out", help="database path (default: SAE_FOLDER/index.db)")
    p.add_argument("--hook", help="hook point blocks.L.hook_<kind> when the SAE metadata has none")
    p.add_argument("--context-size", type=int, help="tokens per row (default: SAE metadata, else 128)")
    p.add_argument("--batch-contexts", type=int, default=8, help="rows per LM batch (default 8)")
    p.add_argument("--top-k", type=int, default=20, help="top examples per latent (default 20)")
    p.add_argument("--intervals", type=int, default=10, help="activation intervals (default 10)")
    p.add_argument("--per-interval", type=int, default=5, help="samples per interval (default 5)")
    p.add_argument("--outlier-factor", type=float, default=10.0,
                   help="skip positions whose norm exceeds this × the median norm (0 = off; default 10)")
    p.add_argument("--latent-chunk", type=int, default=16384, help="latents encoded at once (default 16384)")
    p.add_argument("--no-loss-effects", action="store_true", help="skip the ablation loss effects of examples")
    p.add_argument("--loss-effect-top", type=int, default=20,
                   help="loss effects for this many top examples per latent (default 20; ~one LM forward each)")
    p.add_argument("--loss-effects", choices=("auto", "eager", "lazy"), default="auto",
                   help="when loss effects are computed: eager (at finalise), lazy (on a latent's first dashboard "
                        "view, then cached), auto (eager when cheaper than the pass, else lazy; default)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 … (default: auto)")
    p.add_argument("--dtype", default="auto", help="LM dtype (default: bf16 on CUDA, float32 on CPU)")
    p.add_argument("--restart", action="store_true", help="discard the existing index and start over")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from app.index.builder import run_index
    from app.index.config import IndexConfig
    from app.index.service import index_summary
    from app.lm import load_lm, parse_hook_name
    from app.sae import load_sae
    from app.torchrun import join, leave

    if not str(args.corpus).startswith("hf:") and not Path(args.corpus).exists():
        raise CLIError(f"{args.corpus}: corpus not found")
    if args.tokens < 1:
        raise CLIError("--tokens must be at least 1")
    from app.sae.hub import resolve_sae_ref

    sae_path = resolve_sae_ref(args.sae)  # hf:// and saelens:// → their workspace folder (fetched once)
    placement = join(args.device)  # under torchrun: this rank's GPU (LOCAL_RANK), the process group joined
    device = placement.device
    sae = load_sae(sae_path, device=device, dtype="float32")  # fp32 statistics; the LM may run in bf16
    sae_dir = sae_path if sae_path.is_dir() else sae_path.parent
    meta = sae.cfg.metadata
    if args.hook:
        parse_hook_name(args.hook)
        meta["hook_name"] = args.hook
    if not meta.get("hook_name"):
        raise CLIError(f"{sae_path} has no hook_name in its metadata: pass --hook blocks.L.hook_<kind>")
    model = args.model or meta.get("model_name")
    if not model:
        raise CLIError(f"{sae_path} has no model_name in its metadata: pass --model")
    cfg = IndexConfig(
        context_size=args.context_size or int(meta.get("context_size") or 128),
        batch_contexts=args.batch_contexts, top_k=args.top_k, n_intervals=args.intervals,
        per_interval=args.per_interval, outlier_factor=args.outlier_factor, latent_chunk=args.latent_chunk,
        loss_effects=not args.no_loss_effects, loss_effect_top=args.loss_effect_top,
        loss_effects_when=args.loss_effects,
    )
    lm = load_lm(model, device=device, dtype=args.dtype)
    out = Path(args.out) if args.out else sae_dir / "index.db"
    run_index(lm, sae, args.corpus, args.tokens, out, cfg, restart=args.restart, sae_dir=sae_dir, progress=True)
    if placement.rank == 0:
        s = index_summary(out)
        print(json.dumps({"index": str(out), "tokens": s["tokens"], "d_sae": s["d_sae"], "status": s["status"],
                          "dead_latents": s["dead_latents"], "pass_seconds": s["pass_seconds"]}))
    leave(placement.owns_group)  # run_index ended on a barrier: no collective is left
    return 0
