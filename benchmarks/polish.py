"""Polish a trained SAE's dictionary by sparse coding, then fit the encoder to it: how far recovery can go at d = 64.

    python -m benchmarks.polish [--settings s4c s8h s16n] [--seeds 0] [--d 64] [--epochs 4] [--threads 1]
                                [--saelens] [--cone 0.98]

At d = 64 the default trainer settles at max-|cos| 0.82–0.87 on s4c, s8h and s16n, though rows within cos 0.95 of
the planted ones cost the loss only a few % of FVU (docs/training.md, thirty-sixth pass). This experiment asks how
near the answer a trainer gets without it, and what that costs. For each setting and seed it:

1. trains JumpScope with its defaults (`train_jumpscope`, as benchmarks/synthetic.py does);
2. polishes the decoder's rows by online dictionary learning with orthogonal matching pursuit as the inference
   (`app.training.polish.polish_rows`, row by row: each batch is coded by `omp` with k = the planted L0, then every
   row takes one block-coordinate step on the running statistics A = E[c cᵀ], B = E[c xᵀ], as in Mairal et al.
   2009; rows used by no token and rows within |cos| 0.9 of another restart at the worst-coded tokens' residuals,
   over the first ¾ of the batches; `jumpscope train --polish-share` does the same inside one run);
3. trains the default recipe again with the decoder held at the polished rows (encoder, θ and biases train: the
   `--truth-decoder` run of benchmarks/synthetic.py with these rows instead of the planted ones);

and scores the default SAE and the held one on the same held-out tokens. With --cone COS step 3 does not hold the
rows: they train freely, put back within cos COS of their polished direction after every step (`into_cone`), so the
loss may tilt them as far as that (the side is then "cone", not "held"; docs/training.md, thirty-sixth pass). The
SAE from step 3 is a JumpReLU SAE as SPEC §1 defines it (a latent is active iff its pre-activation exceeds θ);
matching pursuit only moves the rows.
--saelens also trains SAELens's JumpReLU SAE on the same data (as benchmarks/synthetic.py does) and reads both
JumpScope SAEs at SAELens's held-out L0 (`at_l0`), since SAELens ends over the target L0 and FVU follows the L0.
The last stdout line is one JSON object: {"runs": [{setting, seed, default, polished_rows, held | cone, [saelens,
default_at_saelens_l0, held_at_saelens_l0 | cone_at_saelens_l0]}]}.
"""

from __future__ import annotations

import argparse
import json
import logging

import torch

from app.training.polish import polish_rows
from benchmarks.synthetic import _lr_of, at_l0, evaluate, sample_run, train_jumpscope, train_saelens
from benchmarks.synthetic_data import SETTINGS, at_width
from benchmarks.synthetic_metrics import cosine_matrix

log = logging.getLogger(__name__)

def max_cos(truth: torch.Tensor, rows: torch.Tensor) -> float:
    """Mean over planted directions of the best row's |cos| (the benchmark's max-|cos|)."""
    return cosine_matrix(truth, rows).max(dim=1).values.mean().item()


def run_one(name: str, seed: int, d: int, epochs: int, tokens: int, batch: int, saelens: bool = False,
            cone: float | None = None) -> dict:
    """One setting and seed: the default SAE, the polished rows and the SAE held at them ("held"; with `cone`, kept
    within cos `cone` of them instead: "cone"), scored on held-out tokens; with `saelens` also SAELens's SAE on the
    same data, and both JumpScope SAEs read at its L0 (`at_l0`)."""
    cfg = at_width(SETTINGS[name], d) if d != SETTINGS[name].d else SETTINGS[name]
    truth, x, held_x, held_fire, planted = sample_run(cfg, seed, tokens)  # the synthetic benchmark's data
    default = train_jumpscope(x, cfg.n_dirs, planted, tokens, batch, seed, {})
    rows = polish_rows(default.W_dec.detach().float(), x, max(1, round(planted)), epochs, batch, seed, block=1)
    side = "held" if cone is None else "cone"
    held = train_jumpscope(x, cfg.n_dirs, planted, tokens, batch, seed, {}, start=rows, hold=cone is None, cone=cone)
    out = {"setting": name, "seed": seed, "d": d, "planted_l0": planted,
           "default": evaluate(default, "default", truth, held_x, held_fire),
           "polished_rows": {"max_cos": max_cos(truth.dirs, rows)},
           side: evaluate(held, side, truth, held_x, held_fire)}
    if cone is not None:  # how far the loss tilted the rows (≥ `cone` by construction)
        tilt = (torch.nn.functional.normalize(held.W_dec.detach().float(), dim=1) * rows).sum(dim=1)
        out["cone_rows"] = {"min_cos_to_polished": tilt.min().item(), "mean_cos_to_polished": tilt.mean().item()}
    if saelens:
        sl = train_saelens(x, cfg.n_dirs, planted, tokens, batch, seed, _lr_of(tokens, batch, {}))
        out["saelens"] = evaluate(sl, "saelens", truth, held_x, held_fire)
        for name_, sae in (("default", default), (side, held)):
            out[f"{name_}_at_saelens_l0"] = evaluate(at_l0(sae, held_x, out["saelens"]["l0"]), name_, truth, held_x,
                                                     held_fire)
    log.info("%s seed %d d %d: max-|cos| default %.4f → polished rows %.4f → %s SAE %.4f; FVU %.4f → %.4f",
             name, seed, d, out["default"]["max_cos"], out["polished_rows"]["max_cos"], side, out[side]["max_cos"],
             out["default"]["fvu"], out[side]["fvu"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--settings", nargs="+", default=["s4c", "s8h", "s16n"], choices=list(SETTINGS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--d", type=int, default=64, help="activation width (default 64, the synthetic benchmark's)")
    ap.add_argument("--epochs", type=int, default=4, help="polishing passes over the 1M-token training sample")
    ap.add_argument("--tokens", type=int, default=4_194_304, help="each training run's budget")
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--saelens", action="store_true", help="also train SAELens on the same data and read both "
                    "JumpScope SAEs at its L0 (needs sae-lens)")
    ap.add_argument("--cone", type=float, default=None, metavar="COS", help="train the rows freely within cos COS "
                    "of the polished ones instead of holding them there")
    args = ap.parse_args(argv)
    if args.d < 1 or args.epochs < 0:
        ap.error("--d must be positive and --epochs at least 0")
    if args.cone is not None and not 0.0 < args.cone <= 1.0:
        ap.error(f"--cone must be a cosine in (0, 1], got {args.cone}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("app").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    runs = [run_one(name, seed, args.d, args.epochs, args.tokens, args.batch_size, args.saelens, args.cone)
            for name in args.settings for seed in args.seeds]
    print(json.dumps({"runs": runs}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
