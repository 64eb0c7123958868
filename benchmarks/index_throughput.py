"""Index throughput: one-pass index tokens/s ÷ ("LM forward to the hook + SAE encode" alone), same run.

    .venv/bin/python benchmarks/index_throughput.py                 # CPU: small Llama-shaped model, 4k latents
    .venv/bin/python benchmarks/index_throughput.py --gemma2-2b --device cuda --tokens 10000000 --d-sae 16384

Prints one JSON line. The index time is the pass itself (tokenising the corpus, capture, encode, the running
statistics, commits to SQLite); the after-pass work (example windows, logits, neighbours) is reported
separately (without the ablation loss effects, which cost LM forwards per shown example).

Warm-up and steady state are timed apart: the index first runs over `--warmup-tokens` (the top-k buffers and
reservoirs fill, so most active entries are still merged), then is extended to `--tokens` (the same answer
as one run; only entries that can change the state are merged). The baseline is timed over the same two
token ranges. `ratio` is the steady-state one. Each repeat times both sides back to back (alternating which
goes first) and the median over repeats is reported, so load from other processes on a shared machine
affects both sides alike; the load average is printed alongside.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from app.index.activations import corpus_rows
from app.index.builder import run_index
from app.index.config import IndexConfig
from app.index.store import connect, get_meta
from app.lm.families import family_of
from app.lm.hooks import capture
from app.lm.model import LanguageModel
from app.lm.tiny import tiny_config, train_tokenizer
from app.sae import JumpReLUSAE

WORDS = ("the a river city model token light north south music paper window stone garden quickly slowly "
         "red green blue seven twelve because while after before under over between people science").split()


def make_corpus(folder: Path, n_paragraphs: int) -> tuple[Path, list[str]]:
    rng = random.Random(0)
    paras = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 200))) for _ in range(n_paragraphs)]
    path = folder / "corpus.txt"
    path.write_text("\n\n".join(paras))
    return path, paras[:200]


def make_lm(texts: list[str], gemma: bool, device: str) -> LanguageModel:
    tok = train_tokenizer(texts, vocab_size=2048)
    if gemma:  # Gemma-2-2B shapes, random weights (vocab 256000; corpus ids stay below the tiny tokenizer's)
        cfg = AutoConfig.for_model("gemma2", vocab_size=256000, hidden_size=2304, intermediate_size=9216,
                                   num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4,
                                   head_dim=256, max_position_embeddings=8192, bos_token_id=tok.bos_token_id,
                                   eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    else:
        cfg = tiny_config("llama", tok, d_model=256, n_layers=4, n_heads=8, max_positions=512)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=dtype).to(device).eval()
    model.requires_grad_(False)
    return LanguageModel(model=model, tokenizer=tok, name="bench", family=family_of(model))


def calibrated_sae(lm: LanguageModel, hook: tuple[str, int], d_sae: int, rows: torch.Tensor) -> JumpReLUSAE:
    """A random SAE with per-latent thresholds at the 99th percentile of pre-activations (L0 ≈ 1 % of d_sae)."""
    sae = JumpReLUSAE.create(lm.d_model, d_sae, seed=0, device=lm.device,
                             metadata={"hook_name": f"blocks.{hook[1]}.hook_{hook[0]}"})
    h = capture(lm, rows[:4], None, *hook)[:, 1:].reshape(-1, lm.d_model).float()
    with torch.no_grad():
        pre = sae.pre_acts(h)
        sae.log_threshold.copy_(pre.quantile(0.99, dim=0).clamp_min(1e-3).log())
    return sae


@torch.no_grad()
def baseline_seconds(lm, sae, hook, rows: torch.Tensor, batch: int) -> float:
    sync = torch.cuda.synchronize if lm.device.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    for b in range(0, rows.shape[0], batch):
        h = capture(lm, rows[b:b + batch], None, *hook)
        sae.encode(h.reshape(-1, h.shape[-1]))
    sync()
    return time.perf_counter() - t0


def index_seconds(lm, sae, corpus: Path, cfg: IndexConfig, db: Path, warm_tokens: int, tokens: int):
    """(warm-up pass seconds, steady pass seconds, finalise seconds, L0) of one fresh index run."""
    run_index(lm, sae, corpus, warm_tokens, db, cfg, finalize=False)
    t1 = time.perf_counter()
    with connect(db, readonly=True) as conn:
        warm = float(get_meta(conn, "pass_seconds"))
    run_index(lm, sae, corpus, tokens, db, cfg)  # extension: same answer as one run over `tokens`
    total = time.perf_counter() - t1
    with connect(db, readonly=True) as conn:
        steady = float(get_meta(conn, "pass_seconds")) - warm
        seen = float(get_meta(conn, "tokens_seen"))
        l0 = sum(r[0] for r in conn.execute("SELECT count FROM latents")) / seen if seen else 0.0
    return warm, steady, total - steady, l0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=49152, help="total tokens indexed (warm-up included)")
    ap.add_argument("--warmup-tokens", type=int, default=16384, help="first part, timed separately")
    ap.add_argument("--repeats", type=int, default=2, help="back-to-back timings of both sides; median kept")
    ap.add_argument("--d-sae", type=int, default=4096)
    ap.add_argument("--context-size", type=int, default=128)
    ap.add_argument("--batch-contexts", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, help="torch intra-op threads for both sides (default: torch's)")
    ap.add_argument("--gemma2-2b", action="store_true", help="Gemma-2-2B-shaped model, hook at layer 12")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    ctx, per = args.context_size, args.batch_contexts
    warm_rows = max(per, args.warmup_tokens // ctx // per * per)  # whole batches, so both parts align
    n_rows = max(-(-args.tokens // ctx), warm_rows + per)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        n_par = max(200, n_rows * ctx // 80)
        corpus, sample = make_corpus(Path(tmp), n_par)
        lm = make_lm(sample, args.gemma2_2b, args.device)
        hook = ("resid_post", 12 if args.gemma2_2b else 2)
        rows = torch.tensor(list(corpus_rows(lm, corpus, ctx, 0, n_rows)), dtype=torch.long)
        if rows.shape[0] < n_rows:
            raise SystemExit(f"corpus too small: {rows.shape[0]} rows < {n_rows}")
        sae = calibrated_sae(lm, hook, args.d_sae, rows)
        cfg = IndexConfig(context_size=ctx, batch_contexts=per, loss_effects=False)
        baseline_seconds(lm, sae, hook, rows[:per], per)  # warm-up of the kernels, not timed
        runs = []
        for rep in range(args.repeats):
            def base():
                return (baseline_seconds(lm, sae, hook, rows[:warm_rows], per),
                        baseline_seconds(lm, sae, hook, rows[warm_rows:], per))

            def index(rep=rep):
                return index_seconds(lm, sae, corpus, cfg, Path(tmp) / f"index{rep}.db", warm_rows * ctx,
                                     n_rows * ctx)
            if rep % 2 == 0:
                b, i = base(), index()
            else:
                i, b = index(), base()
            runs.append((b, i))
    warm_tok, steady_tok = warm_rows * ctx, (n_rows - warm_rows) * ctx

    def med(f):
        return statistics.median(f(b, i) for b, i in runs)

    print(json.dumps({
        "tokens": n_rows * ctx, "warmup_tokens": warm_tok, "d_sae": args.d_sae, "d_model": lm.d_model,
        "hook": f"blocks.{hook[1]}.hook_{hook[0]}", "device": str(lm.device), "l0": round(runs[-1][1][3], 1),
        "tokens_per_s": round(med(lambda b, i: steady_tok / i[1]), 1),
        "baseline_tokens_per_s": round(med(lambda b, i: steady_tok / b[1]), 1),
        "ratio": round(med(lambda b, i: b[1] / i[1]), 3),
        "warmup_tokens_per_s": round(med(lambda b, i: warm_tok / i[0]), 1),
        "warmup_baseline_tokens_per_s": round(med(lambda b, i: warm_tok / b[0]), 1),
        "warmup_ratio": round(med(lambda b, i: b[0] / i[0]), 3),
        "overall_ratio": round(med(lambda b, i: (b[0] + b[1]) / (i[0] + i[1])), 3),
        "ratios": [round(b[1] / i[1], 3) for b, i in runs],
        "finalize_s_without_loss_effects": round(med(lambda b, i: i[2]), 2),
        "repeats": args.repeats, "threads": torch.get_num_threads(),
        "load_avg": [round(load_before, 1), round(os.getloadavg()[0], 1)], "cpus": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
