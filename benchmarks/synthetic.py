"""Ground-truth SAE benchmark: JumpScope's trainer against SAELens's JumpReLU trainer on planted dictionaries.

    python -m benchmarks.synthetic [--tokens 4194304] [--seeds 0 1] [--settings s2 s8h] [--js objective=tanh]
                                   [--ceiling] [--truth-decoder] [--truth-cone 0.95] [--d 256] [--mean-share 0.3]
                                   [--no-saelens] [--device cuda]

For every setting (benchmarks/synthetic_data.py) and seed: sample training activations and 65,536 held-out
tokens from the same planted dictionary, train JumpScope (`app.training.train`, defaults unless --js KEY=VALUE)
and SAELens (`sae_lens` JumpReLUTrainingSAE + SAETrainer on the same in-memory activations) with the same
d_sae, token budget, batch size and target L0 (= the planted L0 measured on the training sample), then score
both (benchmarks/synthetic_metrics.py). Logs a table per run; the last stdout line is one JSON object:

    {"settings": [...], "runs": [...], "jumpscope": {metric: mean}, "saelens": {metric: mean},
     "at_saelens_l0": {metric: mean}, "ratio": {metric: jumpscope / saelens},
     "wins": {metric: fraction of runs JumpScope ≥ SAELens}}

"at_saelens_l0" is JumpScope's trained SAE with every θ scaled by one factor until its held-out L0 is SAELens's
(`at_l0`; no retraining): SAELens may end off the shared target L0, and recall and FVU follow the L0, so this
column reads both dictionaries at equal sparsity. Reported, not a goal metric ("ratio" and "wins" use the runs).

--ceiling also trains JumpScope *started at the answer*: W_dec rows = the planted directions (at the recipe's
init norm), W_enc = W_decᵀ, everything else as the default run. What that run keeps of the planted dictionary is
what the objective keeps of the answer at this target L0 and budget — a reference a random start is not expected
to beat, though not a strict bound (docs/training.md, sixth pass); the JSON then carries "ceiling": {metric: mean}
and the runs a "ceiling" entry each.

--truth-decoder asks whether the objective prefers the planted dictionary at all: JumpScope's recipe with the
decoder *held at* the planted directions (only the encoder, θ and biases train), then the default recipe from a
random start with its target L0 set to the L0 the held run reached, so both are scored at about the same L0.
When the learned dictionary reconstructs better there ("matched" FVU < "truth_decoder" FVU), the loss of a
one-layer JumpReLU encoder ranks another dictionary above the answer, and no optimiser of it reaches max-|cos| 1.
The JSON then carries "truth_decoder" and "matched" like "ceiling".

--truth-cone COS asks what the objective gives up near the answer: JumpScope's recipe started at the planted
dictionary (as --ceiling) with every decoder row put back within cos COS of its planted direction after each step
(`into_cone`), so the mean max-|cos| stays ≥ COS while the rows tilt as the loss asks. The JSON then carries
"truth_cone" (and "truth_cone_at_saelens_l0", read at SAELens's L0, when SAELens trains). Its FVU beside the
default's and SAELens's says whether a dictionary at that recovery must reconstruct worse (docs/training.md,
thirty-sixth pass).

--d runs every setting at another activation width (default 64; `at_width` keeps superposition, L0, the share
of hierarchical directions and the noise's norm): random directions interfere less in wider spaces
(|cos| ~ 1/√d), and the issue's own case was d_sae 512 at 2× (d = 256). At the default d = 64 the loss ranks
another dictionary above the planted one on s4c, s8h and s16n (--truth-decoder: it reconstructs 5–9 % better than
the planted one held exactly, at the same L0; thirty-fourth pass), but rows within cos 0.95 of the planted ones
give up only 0.3–4.9 % (--truth-cone; thirty-sixth pass): the default's 0.82–0.87 there is where training settles,
not what the loss allows. At d = 256 the planted one reconstructs as well or better (twenty-sixth pass).

--mean-share S adds one fixed vector (along a random direction, drawn after everything else) to every token of
every setting, so that the mean holds the share S of the energy, ‖μ‖² ÷ E‖x‖² — the quantity `--center` auto
reads. The planted settings hold 0.02–0.18 of it; real LM layers 0.2–0.9 (docs/training.md, nineteenth pass).
The planted directions, firing and magnitudes are unchanged, so every metric reads the same dictionary.

--no-saelens trains JumpScope alone (a machine without `sae-lens`, such as a GPU image, or a one-trainer
experiment): the tables and the JSON then have no "saelens", "ratio" or "wins". --device is JumpScope's training
device (default cpu, where every figure in docs/training.md was measured; SAELens always trains on the CPU).

SAELens is driven with its own documented recipe for a target L0 (sparsity mode "quadratic", Gemma Scope 2),
its own init (decoder_init_norm 0.1, threshold 0.01, bandwidth 0.05) and its norm scaling
("expected_average_only_in"); only the peak LR is shared (JumpScope's auto LR for the run length, since
SAELens's 3e-4 default is meant for runs 100× longer), with SAELens's constant schedule.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.synthetic_data import SETTINGS, PlantedDictionary, SynthConfig, at_width
from benchmarks.synthetic_metrics import at_least_as_good, mean_l0, score

log = logging.getLogger(__name__)

HELD_OUT = 65_536
ROW_REWRITES = ("split_jaccard", "collapse_share")  # TrainConfig's checks that move decoder rows (0 = off)


def train_jumpscope(x: torch.Tensor, d_sae: int, target_l0: float, tokens: int, batch: int, seed: int,
                    overrides: dict[str, str], start: torch.Tensor | None = None, hold: bool = False,
                    device: str = "cpu", cone: float | None = None):
    """Train with `jumpscope train` defaults (plus overrides) on an activation file; returns the loaded SAE, on the
    CPU. `start` [d_sae, d_in]: unit directions the decoder starts at (the --ceiling run) instead of the random
    init; `hold`: the decoder's directions stay there (the --truth-decoder run; no split or collapse
    re-initialisation, which would rewrite rows: `ROW_REWRITES`); `cone`: the rows train freely but after every
    step each goes back to within cos `cone` of its `start` direction (`into_cone`; no row rewrites either);
    `device`: where it trains."""
    from app.sae import load_sae
    from app.training import TrainConfig, train
    from app.training.activations import save_activation_file

    with tempfile.TemporaryDirectory(prefix="synth-") as tmp:
        data = save_activation_file(Path(tmp) / "acts.safetensors", x)
        kw: dict = {"activations": str(data), "d_sae": d_sae, "target_l0": target_l0, "tokens": tokens,
                    "batch_size": batch, "out": str(Path(tmp) / "sae"), "seed": seed, "progress": False,
                    "device": device, "checkpoint_every": 0, "buffer_tokens": min(262_144, x.shape[0])}
        fields = TrainConfig.__dataclass_fields__
        for key, value in overrides.items():
            kw[key] = _parse(value, fields[key].type)
        if cone is not None and (start is None or hold or not -1.0 <= cone <= 1.0):
            raise ValueError(f"cone needs start directions, no hold, and a cosine in [-1, 1]; got {cone}")
        if hold or cone is not None:  # the split and collapse checks rewrite decoder rows: not these runs'
            kw.update(dict.fromkeys(ROW_REWRITES, 0.0))
        config = TrainConfig(**kw)
        if start is None:
            train(config)
        else:
            _train_from(config, start, hold, cone)
        return load_sae(Path(tmp) / "sae", device="cpu").eval()


def _train_from(config, start: torch.Tensor, hold: bool = False, cone: float | None = None) -> None:
    """The default run with its decoder started at `start` (unit rows, scaled to the recipe's init norm); with
    `hold` at unit norm and its gradient zeroed, so Adam never moves it (the trainer only rescales rows); with
    `cone` trained freely but put back within cos `cone` of `start` after every step (the second part of a run
    with a polish: `app.training.polished.ConeTrainer`)."""
    from app.training.distributed import init_distributed
    from app.training.polished import ConeTrainer
    from app.training.trainer import Trainer

    class FromDirections(Trainer):
        def _build_sae(self, plan):
            sae = super()._build_sae(plan)
            if tuple(start.shape) != tuple(sae.W_dec.shape):
                raise ValueError(f"start directions {tuple(start.shape)} ≠ W_dec {tuple(sae.W_dec.shape)}")
            with torch.no_grad():
                # a held decoder cannot learn its rows' norm: unit rows (normalised units), so codes and θ
                # live at the data's scale, where θ's LR reaches them
                norm = 1.0 if hold else sae.W_dec.norm(dim=1, keepdim=True)
                sae.W_dec.copy_(start.to(sae.W_dec) * norm)
                sae.W_enc.copy_(sae.W_dec.T)
            if hold:
                sae.W_dec.register_hook(torch.zeros_like)
            return sae

    dist = init_distributed(config.device)
    try:
        trainer = FromDirections(config, dist) if cone is None else ConeTrainer(config, dist, None, start, cone, {})
        trainer.run()
    finally:
        dist.close()


def train_saelens(x: torch.Tensor, d_sae: int, target_l0: float, tokens: int, batch: int, seed: int, lr: float):
    """Train SAELens's JumpReLU SAE with its trainer on the same activations (reshuffled every pass)."""
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    torch.manual_seed(seed)
    cfg = JumpReLUTrainingSAEConfig(d_in=x.shape[1], d_sae=d_sae, jumprelu_sparsity_loss_mode="quadratic",
                                    target_l0=target_l0, normalize_activations="expected_average_only_in")
    sae = JumpReLUTrainingSAE(cfg)
    trainer_cfg = SAETrainerConfig(total_training_samples=tokens, train_batch_size_samples=batch, lr=lr,
                                   lr_end=lr, device="cpu", logger=LoggingConfig(log_to_wandb=False),
                                   n_batches_for_norm_estimate=16)
    SAETrainer(trainer_cfg, sae, _batches(x, batch, seed)).fit()
    return sae.eval()


def _batches(x: torch.Tensor, batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(x.shape[0], generator=g)
        for start in range(0, x.shape[0] - batch + 1, batch):
            yield x[perm[start:start + batch]]


def _parse(value: str, kind: object):
    text = str(kind)
    if value == "None":
        return None
    if "bool" in text:
        return value.lower() in ("1", "true", "yes")
    if "int" in text and "float" not in text:
        return int(value)
    if "float" in text:
        return float(value)
    return value


@torch.no_grad()
def at_l0(sae, x: torch.Tensor, l0: float, iters: int = 40):
    """A copy of JumpScope's `sae` with every θ multiplied by one factor c, found by bisection, so that its mean L0
    on `x` is `l0` (to the nearest firing: the largest L0 ≤ `l0` the factor reaches). The same dictionary read at
    another sparsity — how the benchmark compares recall and FVU at SAELens's L0 when SAELens misses the target
    (docs/training.md, fourteenth pass). `sae` itself is unchanged."""
    if l0 <= 0:
        raise ValueError(f"the L0 to match must be positive, got {l0}")
    if sae.threshold_trainable:
        raise ValueError("at_l0 scales a stored θ: pass the SAE as loaded from its folder (load_sae)")
    pre, base = sae.pre_acts(x), sae.threshold  # one encoder pass: a latent is active iff pre > θ

    def l0_at(c: float) -> float:
        return mean_l0(pre > base * c)

    lo, hi = 0.0, 1.0
    while l0_at(hi) > l0 and hi < 2.0**20:
        lo, hi = hi, hi * 2
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if l0_at(mid) > l0 else (lo, mid)
    out = copy.deepcopy(sae)
    out.threshold.mul_(hi)  # the stored θ, scaled in place
    return out


@torch.no_grad()
def evaluate(sae, kind: str, truth: PlantedDictionary, x: torch.Tensor, fire: torch.Tensor) -> dict[str, float]:
    """Score either trainer's SAE on the held-out tokens (both hold their normalisation folded)."""
    latents = sae.encode(x)
    x_hat = sae.decode(latents)
    return score(truth.dirs, fire, x, sae.W_dec.detach().float(), latents.float(), x_hat.float())


TRAIN_SAMPLE = 1_048_576  # tokens sampled for training; longer budgets reuse them for more passes


def sample_run(cfg: SynthConfig, seed: int, tokens: int):
    """What every trainer of one setting and seed sees: (planted dictionary, training tokens, held-out tokens,
    their true firing, planted L0 of the training tokens)."""
    truth = PlantedDictionary(cfg, seed=seed)
    x, fire_train = truth.sample(min(tokens, TRAIN_SAMPLE), seed=10_000 + seed)
    held_x, held_fire = truth.sample(HELD_OUT, seed=20_000 + seed)
    return truth, x, held_x, held_fire, mean_l0(fire_train)


def run_one(name: str, cfg: SynthConfig, seed: int, tokens: int, batch: int, overrides: dict[str, str],
            ceiling: bool = False, truth_decoder: bool = False, saelens: bool = True, device: str = "cpu",
            truth_cone: float | None = None) -> dict:
    """Both trainers on one setting and seed; returns {setting, seed, planted_l0, jumpscope, saelens} (and, when
    asked, `ceiling`: JumpScope started at the planted dictionary; `truth_decoder` and `matched`: held at it, and
    a random start trained to the L0 the held run reached; `truth_cone`: started at it with every row kept within
    cos `truth_cone` of its planted direction, and read at SAELens's L0 too). `saelens=False`: JumpScope alone
    (no "saelens"); `device`: where JumpScope trains."""
    truth, x, held_x, held_fire, planted = sample_run(cfg, seed, tokens)
    d_sae = cfg.n_dirs
    js = train_jumpscope(x, d_sae, planted, tokens, batch, seed, overrides, device=device)
    result = {"setting": name, "seed": seed, "planted_l0": planted, "d_sae": d_sae, "tokens": tokens,
              "jumpscope": evaluate(js, "jumpscope", truth, held_x, held_fire)}
    if cfg.mean_share > 0:
        result["mean_share"] = cfg.mean_share
    if saelens:
        sl = train_saelens(x, d_sae, planted, tokens, batch, seed, _lr_of(tokens, batch, overrides))
        result["saelens"] = evaluate(sl, "saelens", truth, held_x, held_fire)
        at_sl = at_l0(js, held_x, result["saelens"]["l0"])  # JumpScope's dictionary at SAELens's held-out L0
        result["at_saelens_l0"] = evaluate(at_sl, "at_saelens_l0", truth, held_x, held_fire)
    if ceiling:
        top = train_jumpscope(x, d_sae, planted, tokens, batch, seed, overrides, start=truth.dirs, device=device)
        result["ceiling"] = evaluate(top, "ceiling", truth, held_x, held_fire)
    if truth_decoder:
        held = train_jumpscope(x, d_sae, planted, tokens, batch, seed, overrides, start=truth.dirs, hold=True,
                               device=device)
        result["truth_decoder"] = evaluate(held, "truth_decoder", truth, held_x, held_fire)
        matched = {**overrides, "target_l0": str(result["truth_decoder"]["l0"])}
        result["matched"] = evaluate(train_jumpscope(x, d_sae, planted, tokens, batch, seed, matched, device=device),
                                     "matched", truth, held_x, held_fire)
    if truth_cone is not None:
        cone = train_jumpscope(x, d_sae, planted, tokens, batch, seed, overrides, start=truth.dirs, device=device,
                               cone=truth_cone)
        result["truth_cone"] = evaluate(cone, "truth_cone", truth, held_x, held_fire)
        if saelens:
            result["truth_cone_at_saelens_l0"] = evaluate(at_l0(cone, held_x, result["saelens"]["l0"]),
                                                          "truth_cone", truth, held_x, held_fire)
    _log_table(result)
    return result


def _lr_of(tokens: int, batch: int, overrides: dict[str, str]) -> float:
    from app.training import TrainConfig

    lr = float(overrides["lr"]) if "lr" in overrides else None
    return TrainConfig(activations="x", out="x", d_sae=2, target_l0=1.0, tokens=tokens, batch_size=batch,
                       lr=lr).schedule().lr


EXTRA_SIDES = ("at_saelens_l0", "ceiling", "truth_decoder", "matched", "truth_cone",
               "truth_cone_at_saelens_l0")  # optional columns, in order


def _width(side: str) -> int:
    return max(15, len(side) + 2)  # a column wide enough for its name


def _log_table(r: dict) -> None:
    js, sl = r["jumpscope"], r.get("saelens")
    extra = [side for side in EXTRA_SIDES if side in r]
    head = f"  {'metric':<10}{'jumpscope':>11}" + (f"{'saelens':>11}{'ratio':>8}" if sl else "")
    lines = [f"{r['setting']} seed {r['seed']} (planted L0 {r['planted_l0']:.2f}, d_sae {r['d_sae']}):",
             head + "".join(f"{s:>{_width(s)}}" for s in extra)]
    for key in js:
        both = ""
        if sl:
            ratio = js[key] / sl[key] if sl[key] else float("nan")
            both = f"{sl[key]:>11.4f}{ratio:>8.3f}"
        lines.append(f"  {key:<10}{js[key]:>11.4f}{both}" + "".join(f"{r[s][key]:>{_width(s)}.4f}" for s in extra))
    log.info("\n".join(lines))


def summarise(runs: list[dict]) -> dict:
    """Means over runs per trainer, their ratio, and per metric the fraction of runs JumpScope is ≥ SAELens (the
    last two, and "saelens", only when every run trained SAELens)."""
    keys = list(runs[0]["jumpscope"])
    sides = ("jumpscope",) + tuple(s for s in ("saelens", *EXTRA_SIDES) if all(s in r for r in runs))
    mean = {side: {k: statistics.fmean(r[side][k] for r in runs) for k in keys} for side in sides}
    out = {"settings": sorted({r["setting"] for r in runs}), "runs": runs, **mean}
    if "saelens" in mean:
        out["ratio"] = {k: (mean["jumpscope"][k] / mean["saelens"][k] if mean["saelens"][k] else None) for k in keys}
        wins_each = [at_least_as_good(r["jumpscope"], r["saelens"]) for r in runs]
        out["wins"] = {k: statistics.fmean(float(w[k]) for w in wins_each) for k in wins_each[0]}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--tokens", type=int, default=4_194_304)  # 1,024 steps of 4,096: docs/training.md
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--js", nargs="*", default=[], metavar="KEY=VALUE", help="JumpScope TrainConfig overrides")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--d", type=int, default=None,
                    help="activation width for every setting (superposition, L0 and structure kept; default 64)")
    ap.add_argument("--mean-share", type=float, default=0.0,
                    help="add a fixed offset so the mean holds this share of the energy (‖μ‖² ÷ E‖x‖²; default none)")
    ap.add_argument("--ceiling", action="store_true",
                    help="also train JumpScope started at the planted dictionary (what the objective allows)")
    ap.add_argument("--truth-decoder", action="store_true",
                    help="also train with the decoder held at the planted dictionary, and a random start at its L0")
    ap.add_argument("--truth-cone", type=float, default=None, metavar="COS",
                    help="also train started at the planted dictionary with every row kept within cos COS of it")
    ap.add_argument("--no-saelens", action="store_true", help="train JumpScope alone (no sae-lens needed)")
    ap.add_argument("--device", default="cpu", help="JumpScope's training device: cpu | cuda | cuda:N")
    args = ap.parse_args(argv)
    if args.device != "cpu" and not (args.device.startswith("cuda") and torch.cuda.is_available()):
        ap.error(f"--device {args.device}: not available here (cpu, or cuda[:N] where CUDA is present)")
    if args.d is not None and args.d < 1:
        ap.error(f"--d must be a positive activation width, got {args.d}")
    if args.truth_cone is not None and not 0.0 < args.truth_cone <= 1.0:
        ap.error(f"--truth-cone must be a cosine in (0, 1], got {args.truth_cone}")
    if not 0.0 <= args.mean_share < 1.0:
        ap.error(f"--mean-share must be in [0, 1), got {args.mean_share}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("TQDM_DISABLE", "1")  # SAELens's progress bars
    logging.getLogger("app").setLevel(logging.WARNING)  # the trainers' own progress lines
    torch.set_num_threads(args.threads)
    overrides = dict(kv.split("=", 1) for kv in args.js)
    settings = {name: replace(at_width(SETTINGS[name], args.d) if args.d else SETTINGS[name],
                              mean_share=args.mean_share) for name in args.settings}
    runs = [run_one(name, settings[name], seed, args.tokens, args.batch_size, overrides, args.ceiling,
                    args.truth_decoder, saelens=not args.no_saelens, device=args.device, truth_cone=args.truth_cone)
            for name in args.settings for seed in args.seeds]
    print(json.dumps(summarise(runs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
