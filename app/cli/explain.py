"""`jumpscope explain`: write an explanation (and scores) for every latent of an indexed SAE into its index.db."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from app.cli.common import CLIError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain", help="label latents (built-in, offline; or an LLM) and score the labels → index.db",
        description="Explain every latent (or --latents) of an SAE from its index's example windows and store "
                    "the text, explainer, prompt version and time in SAE_FOLDER/index.db. A rerun skips latents "
                    "already done by the same explainer. The built-in explainer (default; no LLM, CPU) always "
                    "stores its model-free held-out precision/recall; other explainers are scored with --score. "
                    "Hand-written explanations are kept and stay the shown ones.",
    )
    p.add_argument("--sae", required=True, help="SAE folder with an index.db (run `jumpscope index` first)")
    p.add_argument("--index", help="index database (default: SAE_FOLDER/index.db)")
    p.add_argument("--explainer", default="builtin", help="builtin (default), openai or hf")
    p.add_argument("--endpoint", help="OpenAI-compatible base URL (--explainer openai)")
    p.add_argument("--explainer-model", help="model name at the endpoint, or HF model (--explainer openai|hf)")
    p.add_argument("--api-key-env", help="environment variable holding the endpoint's API key (default: "
                                         "OPENAI_API_KEY; local servers need none)")
    p.add_argument("--concurrency", type=int, help="requests in flight at once (--explainer openai; default 4)")
    p.add_argument("--device", help="device of the local model (--explainer hf; default: CUDA when present)")
    p.add_argument("--latents", help="subset, e.g. 0-99,7 (default: all)")
    p.add_argument("--score", action="store_true", help="also score the explanations on held-out examples")
    p.add_argument("--progress-file", help="keep {done, total} latents in this JSON file (for the job runner)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from app.explain.examples import ExampleSource
    from app.explain.runner import parse_latents, run_explain
    from app.fsio import atomic_write_text

    sae = Path(args.sae)
    if not sae.is_dir():
        raise CLIError(f"{sae}: not an SAE folder")
    db = Path(args.index) if args.index else sae / "index.db"
    if not db.is_file():
        raise CLIError(f"{db}: no latent index; run `jumpscope index --sae {sae} …` first")
    with ExampleSource(db) as source:
        d_sae = source.d_sae
    latents = parse_latents(args.latents, d_sae)
    options = {k: v for k, v in (("endpoint", args.endpoint), ("model", args.explainer_model),
                                 ("api_key_env", args.api_key_env), ("concurrency", args.concurrency),
                                 ("device", args.device)) if v}
    if args.explainer == "builtin" and options:
        raise CLIError("--endpoint / --explainer-model apply to --explainer openai or hf, not builtin")
    score = args.score or args.explainer == "builtin"

    def progress(done: int, total: int, counts) -> None:
        log.info("explain: %d/%d latents (%d explained, %d dead, %d failed)", done, total, counts.explained,
                 counts.dead, counts.failed)
        if args.progress_file:
            atomic_write_text(args.progress_file, json.dumps({"done": done, "total": total}))

    counts = run_explain(db, args.explainer, latents, score=score, progress=progress, options=options)
    print(json.dumps({"index": str(db), "explainer": args.explainer, "latents": len(latents) if latents else d_sae,
                      "explained": counts.explained, "scored": counts.scored, "skipped": counts.skipped,
                      "dead": counts.dead, "failed": counts.failed}))
    if counts.failed:
        raise CLIError(f"{counts.failed} latents failed (first: {counts.errors[0] if counts.errors else '?'}); "
                       "rerun to retry them")
    return 0
