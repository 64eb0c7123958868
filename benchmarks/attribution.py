"""Attribution cost and honesty: `attribute` for a 64-token prompt with 4 SAEs against one forward pass of the
model over the same prompt (target: ratio ≤ 3), and the rank correlation (Spearman) between each top row's
attribution and the measured effect of ablating that latent alone (−Δ log p(target)).

    .venv/bin/python -m benchmarks.attribution [--d-model 512 --n-layers 8 --d-sae 4096 --tokens 64 --saes 4]
    .venv/bin/python -m benchmarks.attribution --demo     # Spearman also on the demo bundle's trained LM + SAE

The timing model is a random Llama built from a config with random SAEs spread over its layers, calibrated to
--l0 active latents per token (as in benchmarks/multi_sae.py); the cost ratio depends on shapes, not on
training. Rank correlation means most on a trained model: `--demo` adds the demo bundle's (built on first use;
`--small-demo` builds the seconds-long one).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from app.lm import LanguageModel, load_lm
from app.sae import JumpReLUSAE, load_sae
from app.steering import ablation_deltas, attribute, attribute_ids, ranked_nodes
from benchmarks.multi_sae import build_model, calibrate, paired, spread_saes
from benchmarks.serve_latency import prompt_of

TARGET = 3.0


def ranks(xs: Sequence[float]) -> list[float]:
    """Ranks 1..n, ties sharing their average rank."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    out = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson correlation of the ranks); nan when either side is constant."""
    ra, rb = torch.tensor(ranks(a), dtype=torch.float64), torch.tensor(ranks(b), dtype=torch.float64)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = (ra.norm() * rb.norm()).item()
    return float((ra @ rb).item() / denom) if denom else float("nan")


def honesty(lm: LanguageModel, saes: dict[str, JumpReLUSAE], text: str, rows: int) -> dict[str, float]:
    """Spearman between attribution and the measured single-latent ablation effect over the top `rows` rows."""
    res = attribute_ids(lm, saes, lm.token_ids(text))
    top = ranked_nodes(res, rows)
    measured = ablation_deltas(lm, saes, res.ids, res.position, res.target,
                               [[(n["sae"], n["latent"], n["position"])] for n in top])
    attributed = [n["attribution"] for n in top]
    same_sign = sum((a > 0) == (-m > 0) for a, m in zip(attributed, measured) if m != 0)
    return {"rows": len(top), "spearman": round(spearman(attributed, [-m for m in measured]), 3),
            "same_sign": same_sign, "target_logprob": round(res.logprob, 4)}


def measure(lm: LanguageModel, saes: dict[str, JumpReLUSAE], text: str, repeats: int) -> dict[str, float]:
    """attribute (full JSON answer) and attribute_ids (the computation) against one no-grad forward pass."""
    ids = torch.tensor([lm.token_ids(text)], device=lm.device)

    def forward() -> None:
        with torch.no_grad():
            lm.model(input_ids=ids, use_cache=False)

    best = paired({"forward": forward,
                   "attribute_ids": lambda: attribute_ids(lm, saes, ids[0].tolist()),
                   "attribute": lambda: attribute(lm, saes, text, top_k=32, max_tokens=10**6)},
                  repeats, lm.device)
    return {"forward_ms": round(best["forward"] * 1e3, 3),
            "attribute_ids_ms": round(best["attribute_ids"] * 1e3, 3),
            "attribute_ms": round(best["attribute"] * 1e3, 3),
            "ratio": round(best["attribute"] / best["forward"], 3),
            "ratio_compute_only": round(best["attribute_ids"] / best["forward"], 3)}


def demo_honesty(small: bool, rows: int) -> dict:
    """Spearman on the demo bundle's trained LM + SAE, over a few held-out documents."""
    from app.demo.bundle import ensure_demo

    bundle = ensure_demo(small=small)
    lm = load_lm(bundle.model_dir, device="cpu")
    saes = {"demo": load_sae(bundle.sae_dir)}
    docs = [json.loads(line)["text"] for line in (bundle.root / "corpus" / "val.jsonl").read_text().splitlines()]
    out = []
    for doc in docs[:5]:
        text = lm.tokenizer.decode(lm.token_ids(doc, prepend_bos=False)[:63])
        out.append(honesty(lm, saes, text, rows))
    return {"bundle": "demo-small" if small else "demo", "docs": out,
            "mean_spearman": round(sum(d["spearman"] for d in out) / len(out), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--n-layers", type=int, default=8)
    ap.add_argument("--d-sae", type=int, default=4096)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--saes", type=int, default=4)
    ap.add_argument("--l0", type=int, default=64, help="active latents per token each SAE is calibrated to")
    ap.add_argument("--rows", type=int, default=32, help="top rows whose ablation is measured for Spearman")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is steadier on a busy box)")
    ap.add_argument("--demo", action="store_true", help="also measure Spearman on the demo bundle")
    ap.add_argument("--small-demo", action="store_true", help="like --demo with the small (seconds) bundle")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        lm = build_model(Path(tmp), args.d_model, args.n_layers, args.device, args.dtype)
        saes = spread_saes(lm, args.saes, args.d_sae, kinds=("resid_post", "mlp_out", "attn_out", "resid_pre"))
        text = prompt_of(args.tokens, lambda t: len(lm.token_ids(t)))
        calibrate(lm, saes, text, args.l0)
        report = {"d_model": args.d_model, "n_layers": args.n_layers, "d_sae": args.d_sae, "l0": args.l0,
                  "tokens": len(lm.token_ids(text)), "device": str(lm.device), "dtype": str(lm.dtype),
                  "hooks": [s.cfg.metadata["hook_name"] for s in saes.values()], "target_ratio": TARGET,
                  **measure(lm, saes, text, args.repeats),
                  "honesty_random_model": honesty(lm, saes, text, args.rows)}
    report["ok"] = report["ratio"] <= TARGET
    if args.demo or args.small_demo:
        report["honesty_demo"] = demo_honesty(args.small_demo, args.rows)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
