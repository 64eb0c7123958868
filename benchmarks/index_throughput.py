"""Index throughput: one-pass index tokens/s ÷ ("LM forward to the hook + SAE encode" alone), same run.

    .venv/bin/python benchmarks/index_throughput.py                 # CPU: small Llama-shaped model, 4k latents
    .venv/bin/python benchmarks/index_throughput.py --gemma2-2b --device cuda --tokens 10000000 --d-sae 16384

Prints one JSON line.

* `ratio` (steady state) and `warmup_ratio`: the index's per-batch work (`index_batch`: capture, skip mask,
  encode, running statistics) and the baseline (capture + `sae.encode`) are timed batch by batch,
  alternating which goes first, over the same batches. A batch pair runs within a second or two, so load
  from other processes on a shared machine hits both alike; the ratio is the median over batch pairs. The
  first `--warmup-tokens` are the warm-up (top-k buffers and reservoirs still filling, so most active
  entries are merged); the rest is the steady state (only entries that can change the state are merged).
* `pass_tokens_per_s`: a real `run_index` over all the tokens afterwards (adds corpus tokenisation and the
  SQLite commits), and the after-pass work (example windows, logits, neighbours; without the ablation
  loss effects, which cost LM forwards per shown example) as `finalize_s_without_loss_effects`.
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

from app.index.activations import corpus_rows, reference_norm
from app.index.builder import index_batch, run_index
from app.index.collector import Collector
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


def timed(fn, sync) -> float:
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def interleaved(lm, sae, hook, rows: torch.Tensor, cfg: IndexConfig) -> list[tuple[float, float]]:
    """(baseline seconds, index seconds) per batch, the two timed back to back in alternating order."""
    sync = torch.cuda.synchronize if lm.device.type == "cuda" else (lambda: None)
    per = cfg.batch_contexts
    first = rows[:per].to(lm.device)
    norm_ref = reference_norm(lm, first, capture(lm, first, None, *hook)) if cfg.outlier_factor > 0 else None
    col = Collector(sae.d_sae, cfg, sae.device)
    out = []
    for b, start in enumerate(range(0, rows.shape[0], per)):
        ids = rows[start:start + per]

        def base(ids=ids):
            h = capture(lm, ids, None, *hook)
            sae.encode(h.reshape(-1, h.shape[-1]))

        def index(ids=ids, start=start):
            index_batch(lm, sae, hook, col, ids.tolist(), start, cfg, norm_ref)
        if b % 2:
            t_i, t_b = timed(index, sync), timed(base, sync)
        else:
            t_b, t_i = timed(base, sync), timed(index, sync)
        out.append((t_b, t_i))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=131072, help="total tokens indexed (warm-up included)")
    # The admission rate is still falling at 49k tokens; from 65k on the per-batch cost is steady.
    ap.add_argument("--warmup-tokens", type=int, default=65536, help="first part, reported separately")
    ap.add_argument("--d-sae", type=int, default=4096)
    ap.add_argument("--context-size", type=int, default=128)
    ap.add_argument("--batch-contexts", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, help="torch intra-op threads for both sides (default: torch's)")
    ap.add_argument("--no-pass", action="store_true", help="skip the end-to-end run_index pass")
    ap.add_argument("--gemma2-2b", action="store_true", help="Gemma-2-2B-shaped model, hook at layer 12")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    ctx, per = args.context_size, args.batch_contexts
    warm_batches = max(1, args.warmup_tokens // (ctx * per))
    n_rows = max(-(-args.tokens // ctx), (warm_batches + 1) * per)
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
        pairs = interleaved(lm, sae, hook, rows, cfg)
        load_mid = os.getloadavg()[0]
        result: dict = {}
        if not args.no_pass:
            db = Path(tmp) / "index.db"
            t0 = time.perf_counter()
            run_index(lm, sae, corpus, n_rows * ctx, db, cfg)
            total = time.perf_counter() - t0
            with connect(db, readonly=True) as conn:
                pass_s, seen = float(get_meta(conn, "pass_seconds")), float(get_meta(conn, "tokens_seen"))
                l0 = sum(r[0] for r in conn.execute("SELECT count FROM latents")) / seen
            result = {"pass_tokens_per_s": round(n_rows * ctx / pass_s, 1),
                      "finalize_s_without_loss_effects": round(total - pass_s, 2), "l0": round(l0, 1)}
    warm, steady = pairs[:warm_batches], pairs[warm_batches:]
    tok = per * ctx

    def summary(part, prefix):
        b, i = sum(p[0] for p in part), sum(p[1] for p in part)
        return {f"{prefix}tokens_per_s": round(tok * len(part) / i, 1),
                f"{prefix}baseline_tokens_per_s": round(tok * len(part) / b, 1),
                f"{prefix}ratio": round(statistics.median(p[0] / p[1] for p in part), 3),
                f"{prefix}ratio_quartiles": [round(q, 3) for q in
                                             statistics.quantiles([p[0] / p[1] for p in part], n=4)[::2]]
                if len(part) > 1 else None}

    print(json.dumps({
        "tokens": n_rows * ctx, "warmup_tokens": warm_batches * tok, "d_sae": args.d_sae, "d_model": lm.d_model,
        "hook": f"blocks.{hook[1]}.hook_{hook[0]}", "device": str(lm.device),
        **summary(steady, ""), **summary(warm, "warmup_"), **result,
        "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "load_avg": [round(load_before, 1), round(load_mid, 1), round(os.getloadavg()[0], 1)],
    }))


if __name__ == "__main__":
    main()
