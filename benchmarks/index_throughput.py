"""Index throughput: one-pass index tokens/s ÷ ("LM forward to the hook + SAE encode" alone), same run.

    .venv/bin/python benchmarks/index_throughput.py                 # CPU: small Llama-shaped model, 4k latents
    .venv/bin/python benchmarks/index_throughput.py --gemma2-2b --device cuda --tokens 10000000 --d-sae 16384

Prints one JSON line. The index time is the pass itself (tokenising the corpus, capture, encode, the running
statistics, periodic commits to SQLite); the after-pass work (example windows, logits, neighbours) is
reported separately (without the ablation loss effects, which cost LM forwards per shown example).
Each side is timed twice, interleaved, and the best run is kept, so load from other processes on a shared
machine affects both sides alike.
"""

from __future__ import annotations

import argparse
import json
import random
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--d-sae", type=int, default=4096)
    ap.add_argument("--context-size", type=int, default=128)
    ap.add_argument("--batch-contexts", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--gemma2-2b", action="store_true", help="Gemma-2-2B-shaped model, hook at layer 12")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        n_par = max(200, args.tokens // 80)
        corpus, sample = make_corpus(Path(tmp), n_par)
        lm = make_lm(sample, args.gemma2_2b, args.device)
        hook = ("resid_post", 12 if args.gemma2_2b else 2)
        n_rows = -(-args.tokens // args.context_size)
        rows = torch.tensor(list(corpus_rows(lm, corpus, args.context_size, 0, n_rows)), dtype=torch.long)
        if rows.shape[0] < n_rows:
            raise SystemExit(f"corpus too small: {rows.shape[0]} rows < {n_rows}")
        sae = calibrated_sae(lm, hook, args.d_sae, rows)
        cfg = IndexConfig(context_size=args.context_size, batch_contexts=args.batch_contexts, loss_effects=False)
        baseline_seconds(lm, sae, hook, rows[: args.batch_contexts], args.batch_contexts)  # warm-up
        base, index, fin = [], [], []
        for attempt in range(2):
            base.append(baseline_seconds(lm, sae, hook, rows, args.batch_contexts))
            db = Path(tmp) / f"index{attempt}.db"
            t0 = time.perf_counter()
            run_index(lm, sae, corpus, n_rows * args.context_size, db, cfg)
            total = time.perf_counter() - t0
            with connect(db, readonly=True) as conn:
                pass_s = float(get_meta(conn, "pass_seconds"))
                l0 = float(get_meta(conn, "tokens_seen")) and sum(
                    r[0] for r in conn.execute("SELECT count FROM latents")) / float(get_meta(conn, "tokens_seen"))
            index.append(pass_s)
            fin.append(total - pass_s)
    tokens = n_rows * args.context_size
    print(json.dumps({
        "tokens": tokens, "d_sae": args.d_sae, "d_model": lm.d_model, "hook": f"blocks.{hook[1]}.hook_{hook[0]}",
        "device": str(lm.device), "l0": round(l0, 1), "tokens_per_s": round(tokens / min(index), 1),
        "baseline_tokens_per_s": round(tokens / min(base), 1), "ratio": round(min(base) / min(index), 3),
        "finalize_s_without_loss_effects": round(min(fin), 2),
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
