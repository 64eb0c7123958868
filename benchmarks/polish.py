"""Polish a trained SAE's dictionary by sparse coding, then fit the encoder to it: how far recovery can go at d = 64.

    python -m benchmarks.polish [--settings s4c s8h s16n] [--seeds 0] [--d 64] [--epochs 4] [--threads 1]
                                [--saelens] [--cone 0.98]

At d = 64 the default trainer settles at max-|cos| 0.82–0.87 on s4c, s8h and s16n, though rows within cos 0.95 of
the planted ones cost the loss only a few % of FVU (docs/training.md, thirty-sixth pass). This experiment asks how
near the answer a trainer gets without it, and what that costs. For each setting and seed it:

1. trains JumpScope with its defaults (`train_jumpscope`, as benchmarks/synthetic.py does);
2. polishes the decoder's rows by online dictionary learning with orthogonal matching pursuit as the inference
   (`polish`: each batch is coded by `omp` with k = the planted L0, then every row takes one block-coordinate step
   on the running statistics A = E[c cᵀ], B = E[c xᵀ], as in Mairal et al. 2009; rows used by no token and rows
   within |cos| 0.9 of another restart at the worst-coded tokens' residuals, over the first ¾ of the batches);
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

from benchmarks.synthetic import _lr_of, at_l0, evaluate, sample_run, train_jumpscope, train_saelens
from benchmarks.synthetic_data import SETTINGS, at_width
from benchmarks.synthetic_metrics import cosine_matrix

log = logging.getLogger(__name__)

DUPLICATE_COS = 0.9  # a row this close to another restarts


def omp(x: torch.Tensor, rows: torch.Tensor, k: int, ridge: float = 1e-5,
        chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthogonal matching pursuit for every token at once: k times pick the row most correlated (signed: codes are
    meant to be positive) with the token's residual, then refit the chosen rows' codes by least squares (with a
    tiny ridge). Returns codes [n, n_rows] (k non-zeros per token) and residuals [n, d].

    Batch-OMP (Rubinstein, Zibulevsky and Elad 2008): the correlations are updated through the Gram matrix G of the
    rows, residual·rowsᵀ = x·rowsᵀ − Σ_j code_j G[j], so a step costs n·t·n_rows instead of n·d·n_rows — the
    difference on real layers (d 576, k 32). Tokens go `chunk` at a time (G's chosen rows: chunk·k·n_rows floats)."""
    if k < 1 or k > rows.shape[0]:
        raise ValueError(f"k must be in [1, {rows.shape[0]}], got {k}")
    gram = rows @ rows.T
    eye = ridge * torch.eye(k, dtype=x.dtype)
    codes = torch.zeros(x.shape[0], rows.shape[0], dtype=x.dtype)
    residuals = torch.empty_like(x)
    for at in range(0, x.shape[0], chunk):
        xs = x[at:at + chunk]
        start = xs @ rows.T  # x·rowsᵀ
        corr = start.clone()
        chosen = torch.empty(xs.shape[0], k, dtype=torch.long)
        g_chosen = torch.empty(xs.shape[0], k, rows.shape[0], dtype=x.dtype)
        for t in range(k):
            if t:
                corr.scatter_(1, chosen[:, :t], float("-inf"))
            chosen[:, t] = corr.argmax(dim=1)
            g_chosen[:, t] = gram[chosen[:, t]]
            picked, g_now = chosen[:, :t + 1], g_chosen[:, :t + 1]
            small = g_now.gather(2, picked.unsqueeze(1).expand(-1, t + 1, -1))  # G restricted to the chosen rows
            coef = torch.linalg.solve(small + eye[:t + 1, :t + 1], start.gather(1, picked).unsqueeze(2))
            corr = start - (coef.transpose(1, 2) @ g_now).squeeze(1)
        codes[at:at + chunk].scatter_(1, chosen, coef.squeeze(2))
        residuals[at:at + chunk] = xs - codes[at:at + chunk] @ rows
    return codes, residuals


def polish(rows: torch.Tensor, x: torch.Tensor, k: int, epochs: int, batch: int = 4096, seed: int = 0,
           forget: float = 0.99, restart_share: float = 0.75, block: int = 1) -> torch.Tensor:
    """Online dictionary learning from `rows` [n_rows, d] on the tokens `x` [n, d], coded by `omp` with k rows per
    token; returns unit rows. `forget` is the running statistics' decay per batch. Unused and duplicate rows
    restart only over the first `restart_share` of the batches: a row restarted late would end as one token's
    residual, a latent nothing else uses. `block` rows update together (1: one row at a time, Mairal's sweep;
    larger blocks read the rows once per block, for dictionaries of thousands of rows)."""
    g = torch.Generator().manual_seed(seed)
    d_rows = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
    n_rows = d_rows.shape[0]
    a = torch.zeros(n_rows, n_rows, dtype=x.dtype)
    b = torch.zeros(n_rows, x.shape[1], dtype=x.dtype)
    per_epoch = len(range(0, x.shape[0] - batch + 1, batch))
    restart_until, done = int(restart_share * epochs * per_epoch), 0
    for epoch in range(epochs):
        perm = torch.randperm(x.shape[0], generator=g)
        fvu = []
        for start in range(0, x.shape[0] - batch + 1, batch):
            xb = x[perm[start:start + batch]]
            codes, residual = omp(xb, d_rows, k)
            fvu.append((residual.pow(2).sum() / xb.pow(2).sum()).item())
            a.mul_(forget).add_(codes.T @ codes / batch)
            b.mul_(forget).add_(codes.T @ xb / batch)
            _sweep(d_rows, a, b, block)
            if done < restart_until:
                _restart(d_rows, a, b, xb, residual)
            done += 1
        log.info("polish epoch %d: matching-pursuit FVU %.4f", epoch, sum(fvu) / max(len(fvu), 1))
    return d_rows


def _sweep(rows: torch.Tensor, a: torch.Tensor, b: torch.Tensor, block: int) -> None:
    """One block-coordinate sweep over the rows, `block` at a time (Gauss–Seidel between blocks: each block sees the
    blocks before it), each row moved to its least-squares optimum given the others, then back to unit norm."""
    diag = a.diagonal()
    if block == 1:  # row by row (the thirty-fifth pass's figures)
        for j in range(rows.shape[0]):
            if diag[j] > 1e-6:
                row = rows[j] + (b[j] - a[j] @ rows) / diag[j]
                rows[j] = row / row.norm().clamp_min(1e-12)
        return
    for j in range(0, rows.shape[0], block):
        at = slice(j, j + block)
        used = (diag[at] > 1e-6).unsqueeze(1)
        step = rows[at] + (b[at] - a[at] @ rows) / diag[at].clamp_min(1e-6).unsqueeze(1)
        step = step / step.norm(dim=1, keepdim=True).clamp_min(1e-12)
        rows[at] = torch.where(used, step, rows[at])


def _restart(rows: torch.Tensor, a: torch.Tensor, b: torch.Tensor, xb: torch.Tensor, residual: torch.Tensor) -> None:
    """Rows no token used and rows within DUPLICATE_COS of another restart at the worst-coded tokens' residuals."""
    diag = a.diagonal()
    unused = diag < 1e-4 * diag.mean()
    cos = (rows @ rows.T).abs().triu(1)
    again = torch.nonzero(unused | (cos.max(0).values > DUPLICATE_COS)).squeeze(1)
    if not len(again):
        return
    worst = residual.norm(dim=1).topk(min(len(again), xb.shape[0])).indices
    again = again[:len(worst)]
    rows[again] = residual[worst] / residual[worst].norm(dim=1, keepdim=True).clamp_min(1e-12)
    a[again] = 0
    a[:, again] = 0
    b[again] = 0


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
    rows = polish(default.W_dec.detach().float(), x, max(1, round(planted)), epochs, batch, seed)
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
