"""One prompt through N SAEs in one pass: `encode_many` on a 128-token prompt against its floor, measured in the
same run: one forward pass to the deepest hook (`capture`) plus N `sae.encode` calls.

    .venv/bin/python -m benchmarks.multi_sae [--d-model 512 --n-layers 8 --d-sae 4096 --tokens 128 --n 1 4 8]

The model is a random Llama built from a config (no download), the SAEs random JumpReLU SAEs spread evenly
over the layers (the deepest always at the last block), their θ calibrated to --l0 active latents per token.
Target: ratio = encode_many / floor ≤ 1.2 for every N.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from app.encoding import encode_many
from app.lm import LanguageModel, capture, capture_many, load_lm, parse_hook_name
from app.sae import JumpReLUSAE
from benchmarks.serve_latency import prompt_of
from benchmarks.server import WORDS

TARGET = 1.2


def build_model(root: Path, d_model: int, n_layers: int, device: str = "auto", dtype: str = "auto"
                ) -> LanguageModel:
    """A random Llama of the given size with a tokenizer trained on the benchmark words, loaded via load_lm."""
    from app.lm.tiny import save_tiny_model, train_tokenizer

    tok = train_tokenizer([" ".join(WORDS)] * 50, vocab_size=400)
    folder = save_tiny_model(root / "model", "llama", tok, d_model=d_model, n_layers=n_layers,
                             n_heads=max(1, d_model // 64), max_positions=1024)
    return load_lm(folder, device=device, dtype=dtype)


def spread_saes(lm: LanguageModel, n: int, d_sae: int, kinds: tuple[str, ...] = ("resid_post",)
                ) -> dict[str, JumpReLUSAE]:
    """n random SAEs at hooks spread evenly over the layers, the last at the last block (kinds cycle)."""
    layers = [round((k + 1) * lm.n_layers / n) - 1 for k in range(n)] if n <= lm.n_layers else \
        [k % lm.n_layers for k in range(n)]
    saes = {}
    for k, layer in enumerate(sorted(layers)):
        hook = f"blocks.{layer}.hook_{kinds[k % len(kinds)]}"
        sae = JumpReLUSAE.create(lm.d_model, d_sae, threshold=0.02, seed=k,
                                 metadata={"model_name": lm.name, "hook_name": hook, "context_size": 1024})
        saes[f"sae{k}-{hook}"] = sae.to_dtype_device(lm.dtype, lm.device).requires_grad_(False)
    return saes


@torch.no_grad()
def calibrate(lm: LanguageModel, saes: dict[str, JumpReLUSAE], text: str, l0: int) -> None:
    """Set each SAE's θ (one value for all latents) so that about `l0` latents fire per token on `text`, as in a
    trained SAE (random weights with a fixed θ fire far too often or never)."""
    ids = torch.tensor([lm.token_ids(text)])
    acts = capture_many(lm, ids, None, [s.cfg.metadata["hook_name"] for s in saes.values()])
    for sae in saes.values():
        pre = sae.pre_acts(acts[sae.cfg.metadata["hook_name"]][0, 1:]).float().flatten()  # BOS never counts
        theta = pre.kthvalue(max(1, pre.numel() - l0 * (ids.shape[1] - 1))).values.clamp_min(0)
        sae.set_threshold(torch.full((sae.d_sae,), float(theta)))


def paired(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, float]:
    """Best wall time (s) of each fn over `repeats` rounds, the fns alternating within each round (so load from
    other processes hits them alike), after one warm-up round."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    best = {name: float("inf") for name in fns}
    for r in range(repeats + 1):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            if r:
                best[name] = min(best[name], time.perf_counter() - t0)
    return best


def deepest_hook(saes: dict[str, JumpReLUSAE]) -> tuple[str, int]:
    """(kind, layer) of the hook the forward reaches last."""
    order = ("resid_pre", "attn_out", "mlp_out", "resid_post")
    points = [parse_hook_name(s.cfg.metadata["hook_name"]) for s in saes.values()]
    return max(points, key=lambda kl: (kl[1], order.index(kl[0])))


def measure(lm: LanguageModel, saes: dict[str, JumpReLUSAE], text: str, repeats: int) -> dict[str, float]:
    """encode_many vs the floor (capture to the deepest hook + one encode per SAE), alternated in one run."""
    ids = torch.tensor([lm.token_ids(text)])
    deepest = deepest_hook(saes)

    def floor() -> None:
        with torch.no_grad():
            h = capture(lm, ids, None, *deepest)[0]
            for sae in saes.values():
                sae.encode(h)

    best = paired({"many": lambda: encode_many(lm, saes, text, top_k=16, max_tokens=10**6), "floor": floor},
                  repeats, lm.device)
    return {"encode_many_ms": round(best["many"] * 1e3, 3), "floor_ms": round(best["floor"] * 1e3, 3),
            "ratio": round(best["many"] / best["floor"], 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--n-layers", type=int, default=8)
    ap.add_argument("--d-sae", type=int, default=4096)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--l0", type=int, default=64, help="active latents per token each SAE is calibrated to")
    ap.add_argument("--n", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is steadier on a busy box)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        lm = build_model(Path(tmp), args.d_model, args.n_layers, args.device, args.dtype)
        text = prompt_of(args.tokens, lambda t: len(lm.token_ids(t)))
        rows = []
        for n in args.n:
            saes = spread_saes(lm, n, args.d_sae)
            calibrate(lm, saes, text, args.l0)
            rows.append({"n_saes": n, "hooks": [s.cfg.metadata["hook_name"] for s in saes.values()],
                         **measure(lm, saes, text, args.repeats)})
    print(json.dumps({"d_model": args.d_model, "n_layers": args.n_layers, "d_sae": args.d_sae, "l0": args.l0,
                      "tokens": len(lm.token_ids(text)), "device": str(lm.device), "dtype": str(lm.dtype),
                      "target_ratio": TARGET, "runs": rows,
                      "ok": all(r["ratio"] <= TARGET for r in rows)}, indent=1))


if __name__ == "__main__":
    main()
