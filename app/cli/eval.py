"""`jumpscope eval`: L0, FVU, ΔLM loss, CE score, KL, dead/dense latents of an SAE spliced into its LM.

    jumpscope eval --sae DIR [--model M] [--corpus PATH | --eval-corpus PATH] [--tokens N --batch-size B]

Scores held-out data: for an SAE trained by `jumpscope train` (train_config.json beside it) and its training
corpus (the default), only the documents training held out (--holdout-every); another corpus (--corpus or
--eval-corpus) is scored whole. Results are printed and saved as `eval.json` beside the SAE (atomically), with
`split` saying which documents, rows and tokens were scored; definitions in app/training/evaluate.py and SPEC §3.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from app.cli.common import CLIError

log = logging.getLogger(__name__)

DEFAULT_TOKENS = 32_768
DEFAULT_CONTEXT = 128


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate an SAE spliced into its LM (L0, FVU, ΔLM loss, CE score, KL)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--sae", required=True, help="SAE folder (native/SAELens), Gemma Scope params.npz, "
                   "hf://OWNER/REPO/PATH or saelens://RELEASE/SAE_ID")
    p.add_argument("--model", help="LM folder, .gguf file or hub id (default: the SAE's metadata model_name)")
    p.add_argument("--outlier-factor", type=float, default=None,
                   help="skip positions whose activation norm exceeds this × the reference norm (default: the "
                        "SAE's training rule and reference norm from its metadata, else 10 × the first batch's "
                        "median; 0: off)")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--corpus", help="corpus to evaluate on (default: the training corpus train_config.json "
                      "names); for the training corpus only the documents training held out are scored")
    data.add_argument("--eval-corpus", help="a separate evaluation corpus, scored whole (text file/folder, "
                      ".jsonl, .parquet or hf:NAME[:split])")
    p.add_argument("--hook", help="hook name, e.g. blocks.6.hook_resid_post (default: the SAE's metadata)")
    p.add_argument("--tokens", type=int, default=DEFAULT_TOKENS, help="tokens to evaluate on (rounded up to "
                   f"whole contexts; default {DEFAULT_TOKENS})")
    p.add_argument("--batch-size", type=int, default=8, help="contexts per LM forward pass (default 8)")
    p.add_argument("--context-size", type=int, help="tokens per context, BOS included (default: the SAE's "
                   f"metadata context_size, else {DEFAULT_CONTEXT})")
    p.add_argument("--seed", type=int, default=0, help="seed of the context shuffle and of the bootstrap "
                   "intervals (default 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--dtype", default="auto", help="LM dtype: auto (bf16 on CUDA, fp32 on CPU), float32, ...")
    p.add_argument("--out", help="where to write the JSON (default: eval.json beside the SAE)")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a summary")
    p.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    if args.tokens < 1:
        raise CLIError(f"--tokens must be ≥ 1, got {args.tokens}")
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be ≥ 1, got {args.batch_size}")
    if args.context_size is not None and args.context_size < 2:
        raise CLIError(f"--context-size must be ≥ 2, got {args.context_size}")
    from app.sae.hub import resolve_sae_ref

    args.sae = str(resolve_sae_ref(args.sae))  # hf:// and saelens:// → their workspace folder (fetched once)
    if not Path(args.sae).exists():
        raise CLIError(f"--sae {args.sae}: no such file or folder")
    for flag, value in (("--corpus", args.corpus), ("--eval-corpus", args.eval_corpus)):
        if value is not None and not value.startswith("hf:") and not Path(value).exists():
            raise CLIError(f"{flag} {value}: not found")


def _eval_path(args: argparse.Namespace) -> Path:
    if args.out:
        return Path(args.out)
    sae_path = Path(args.sae)
    return (sae_path if sae_path.is_dir() else sae_path.parent) / "eval.json"


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    from tqdm import tqdm

    from app.lm import load_lm, parse_hook_name
    from app.lm.corpus import load_split
    from app.sae import load_sae
    from app.training.evaluate import evaluate_sae, format_summary, save_eval
    from app.training.heldout import choose_eval_source, training_record

    source = choose_eval_source(training_record(args.sae), args.corpus, args.eval_corpus)
    if not source.corpus.startswith("hf:") and not Path(source.corpus).exists():
        raise CLIError(f"the training corpus {source.corpus} is not found (moved?); pass --eval-corpus PATH "
                       "to score a separate corpus")
    sae = load_sae(args.sae)
    meta = sae.cfg.metadata
    model = args.model or meta.get("model_name")
    if not model:
        raise CLIError("the SAE's metadata has no model_name; pass --model")
    hook = args.hook or meta.get("hook_name")
    if not hook:
        raise CLIError("the SAE's metadata has no hook_name; pass --hook (e.g. blocks.6.hook_resid_post)")
    parse_hook_name(hook)  # ValueError → exit 2 before loading the model
    factor, norm_ref = _outlier_rule(meta, args.outlier_factor)
    context_size = args.context_size or int(meta.get("context_size") or DEFAULT_CONTEXT)
    out_path = _eval_path(args)
    if not out_path.parent.is_dir():
        raise CLIError(f"cannot write {out_path}: folder {out_path.parent} does not exist")

    width = _model_width(model)
    if width is not None and width != sae.d_in:
        raise CLIError(f"SAE d_in {sae.d_in} does not match {model}'s d_model {width}")
    lm = load_lm(model, device=args.device, dtype=args.dtype)
    if sae.d_in != lm.d_model:
        raise CLIError(f"SAE d_in {sae.d_in} does not match {model}'s d_model {lm.d_model}")
    limit = lm.max_positions
    if limit and context_size > limit:
        log.warning("context size %d exceeds %s's %d positions; using %d", context_size, model, limit, limit)
        context_size = limit
    contexts, split = load_split(lm, source.corpus, context_size, n_tokens=args.tokens, seed=args.seed,
                                 part=source.part, holdout_every=source.holdout_every)
    with tqdm(total=contexts.shape[0], unit="ctx", desc="eval", leave=False) as bar:
        result = evaluate_sae(sae, lm, contexts, batch_size=args.batch_size, hook=hook, seed=args.seed,
                              outlier_factor=factor, norm_ref=norm_ref,
                              progress=lambda done, total: bar.update(done - bar.n))
    split.update(scored_tokens=result["tokens"], predictions=result["predictions"],
                 disjoint_from_training=source.disjoint_from_training)
    result.update(sae=str(args.sae), model=str(model), corpus=split["corpus"], seed=args.seed, split=split)
    save_eval(result, out_path)
    print(json.dumps(result, indent=2) if args.json else format_summary(result))
    if not args.json:
        print(f"saved {out_path}")
    return 0


def _outlier_rule(meta: dict, factor: float | None) -> tuple[float, float | None]:
    """(factor, reference norm) for eval: the flag's factor with a fresh reference norm, else the rule training
    recorded in the SAE's metadata (app/lm/outliers.py), else the default factor with a fresh reference norm."""
    if factor is not None:
        if not factor >= 0:
            raise CLIError(f"--outlier-factor must be >= 0 (0 turns outlier skipping off), got {factor}")
        return factor, None
    recorded = meta.get("outliers")
    if isinstance(recorded, dict) and isinstance(recorded.get("factor"), int | float):
        ref = recorded.get("reference_norm")
        return float(recorded["factor"]), float(ref) if isinstance(ref, int | float) and ref > 0 else None
    from app.lm.outliers import OUTLIER_FACTOR

    return OUTLIER_FACTOR, None


def _model_width(model: str) -> int | None:
    """d_model from the model's config alone (checked before loading weights); None when unknown."""
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(model, local_files_only=Path(model).is_dir()).get_text_config()
        return int(cfg.hidden_size)
    except Exception:  # load_lm reports unloadable models with a clear message
        return None
