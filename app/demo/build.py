"""Build the demo bundle: world → tokenizer → tiny LM → SAE (training pipeline) → eval → index → explain → report.

Everything is written into one folder; `app.demo.bundle` builds it in a temporary sibling and renames it into
place, so a half-built bundle is never seen. Sizes are chosen for ≤ 5 minutes on a 2-core CPU (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from app.demo.build_config import BuildConfig
from app.demo.layout import BUNDLE_VERSION, BundleLayout
from app.demo.world import generate_documents, write_docs

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]  # (what is happening, overall fraction done in [0, 1])


@dataclass
class BuildResult:
    """Where things are and how long each stage took."""

    root: Path
    seconds: dict[str, float] = field(default_factory=dict)


def choose_threads(requested: int | None) -> int:
    """All cores when the machine is idle; one thread when others keep the cores busy.

    On a shared 2-core box, two spinning OpenMP threads that must wait for busy cores were measured 5-7x slower
    than one thread; alone, two threads are faster.
    """
    if requested:
        return requested
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    return cores if busy < 0.5 else max(1, min(cores, int(cores - busy)))


class _Stages:
    """Reports progress as weighted stages (weights ≈ their share of the build time)."""

    WEIGHTS = {"world": 3, "lm": 40, "sae": 35, "eval": 5, "index": 8, "explain": 1, "report": 9}

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.done = 0.0
        self.total = float(sum(self.WEIGHTS.values()))
        self.seconds: dict[str, float] = {}

    def report(self, stage: str, message: str, fraction: float) -> None:
        overall = (self.done + self.WEIGHTS[stage] * min(1.0, max(0.0, fraction))) / self.total
        if self.progress:
            self.progress(message, overall)

    def finish(self, stage: str, started: float) -> None:
        self.done += self.WEIGHTS[stage]
        self.seconds[stage] = round(time.perf_counter() - started, 2)
        log.info("demo build: %s done in %.1f s", stage, self.seconds[stage])


def build_bundle(root: str | os.PathLike, cfg: BuildConfig, progress: Progress | None = None,
                 final_root: str | os.PathLike | None = None) -> BuildResult:
    """Build every part of the demo into `root` (a fresh folder).

    `final_root` is where the folder will live after the caller renames it; the SAE's metadata paths (model,
    corpus) point there, so `load_sae(...).cfg.metadata["model_name"]` is right once the bundle is in place.
    """
    root = Path(root)
    final_root = Path(final_root) if final_root else root
    root.mkdir(parents=True, exist_ok=True)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(choose_threads(cfg.threads))
    stages = _Stages(progress)
    try:
        _build(root, final_root, cfg, stages)
    finally:
        torch.set_num_threads(threads_before)
    BundleLayout(root).build_info.write_text(json.dumps({"bundle_version": BUNDLE_VERSION, "config": asdict(cfg),
                                               "seconds": stages.seconds,
                                               "threads": choose_threads(cfg.threads)}, indent=2))
    return BuildResult(root, stages.seconds)


def _build(root: Path, final_root: Path, cfg: BuildConfig, stages: _Stages) -> None:
    from app.demo import lm_train
    from app.lm.tiny import train_tokenizer

    layout = BundleLayout(root)
    t = time.perf_counter()
    stages.report("world", "generating the synthetic world", 0.0)
    layout.corpus_dir.mkdir()
    train_docs = generate_documents(cfg.train_docs, cfg.seed)
    val_docs = generate_documents(cfg.val_docs, cfg.seed + 1_000_001)
    eval_docs = generate_documents(cfg.eval_docs, cfg.seed + 2_000_003)
    write_docs(layout.train_corpus, train_docs)
    write_docs(layout.val_corpus, val_docs)
    write_docs(layout.eval_docs, eval_docs, with_spans=True)
    tokenizer = train_tokenizer((d.text for d in train_docs), cfg.vocab_size)
    stages.finish("world", t)

    t = time.perf_counter()
    lm_cfg = lm_train.LMTrainConfig(d_model=cfg.d_model, n_layers=cfg.n_layers, n_heads=4, d_mlp=4 * cfg.d_model,
                                    context_size=cfg.context_size, batch_size=cfg.lm_batch_size,
                                    steps=cfg.lm_steps, lr=cfg.lm_lr, warmup_steps=min(30, cfg.lm_steps // 5),
                                    seed=cfg.seed)
    train_rows = lm_train.pack(tokenizer, [d.text for d in train_docs], cfg.context_size)
    val_rows = lm_train.pack(tokenizer, [d.text for d in val_docs], cfg.context_size)
    model = lm_train.train_lm(lm_cfg, tokenizer, train_rows,
                              progress=lambda msg, f: stages.report("lm", msg, f))
    lm_train.save_lm(model, tokenizer, layout.model_dir, lm_cfg)
    lm_metrics = {"val_loss": lm_train.validation_loss(model, tokenizer, val_rows),
                  "unigram_loss": lm_train.unigram_loss(tokenizer, train_rows, val_rows),
                  "train_tokens": int(cfg.lm_steps * cfg.lm_batch_size * cfg.context_size)}
    layout.lm_metrics.write_text(json.dumps(lm_metrics, indent=2))
    del model
    stages.finish("lm", t)

    t = time.perf_counter()
    sae_dir = _train_sae(root, final_root, cfg, stages)
    stages.finish("sae", t)

    from app.lm import load_lm
    from app.sae import load_sae

    lm = load_lm(layout.model_dir, device="cpu")
    sae = load_sae(sae_dir, device="cpu", dtype="float32")

    t = time.perf_counter()
    stages.report("eval", "evaluating the SAE (L0, FVU, ΔLM loss)", 0.0)
    _evaluate(lm, sae, sae_dir, layout.val_corpus, cfg)
    stages.finish("eval", t)

    t = time.perf_counter()
    stages.report("index", "indexing latent dashboards", 0.0)
    _index(lm, sae, layout, cfg)
    stages.finish("index", t)

    t = time.perf_counter()
    stages.report("explain", "labelling latents (built-in explainer)", 0.0)
    from app.explain.runner import run_explain

    run_explain(layout.sae_index, "builtin")
    stages.finish("explain", t)

    t = time.perf_counter()
    stages.report("report", "validating against ground truth", 0.0)
    from app.demo.report import build_report, save_report

    save_report(build_report(root, lm=lm, sae=sae, cfg=cfg), layout.report)
    stages.finish("report", t)


def _train_sae(root: Path, final_root: Path, cfg: BuildConfig, stages: _Stages) -> Path:
    """Train the SAE with the project's training pipeline (app.training.train) on the world's corpus."""
    from app.training.config import TrainConfig
    from app.training.trainer import train

    layout = BundleLayout(root)
    sae_dir = layout.sae_dir
    tc = TrainConfig(model=str(layout.model_dir), hook="resid_post", layer=cfg.layer,
                     corpus=str(layout.train_corpus), context_size=cfg.context_size,
                     lm_batch_size=64, d_sae=cfg.d_sae, target_l0=cfg.target_l0, tokens=cfg.sae_tokens,
                     batch_size=cfg.sae_batch_size, lr=cfg.sae_lr, threshold_init=cfg.sae_threshold_init,
                     buffer_tokens=min(262_144, cfg.sae_tokens), norm_tokens=min(65_536, cfg.sae_tokens),
                     out=str(sae_dir), device="cpu", seed=cfg.seed, checkpoint_every=0, progress=False,
                     # the recipe the demo world was tuned and measured with (docs/demo.md), not the newer default
                     objective="step", threshold_param="log", threshold_step="per_latent", decoder="unit",
                     adam_beta1=0.0, adam_beta2=0.999, aux_coefficient=0.0, center=False, split_jaccard=0.0,
                     collapse_share=0.0)
    stages.report("sae", f"training a {cfg.d_sae}-latent JumpReLU SAE on blocks.{cfg.layer}.hook_resid_post",
                  0.0)
    train(tc)
    _point_metadata_at(sae_dir, root, final_root)
    return sae_dir


def _point_metadata_at(sae_dir: Path, root: Path, final_root: Path) -> None:
    """Rewrite the SAE's metadata paths (model_name, dataset_path) from the build folder to the bundle's final place.

    The trainer records where it read the model and corpus, which is the temporary build folder; once the
    bundle is renamed into place that folder is gone, while `final_root` stays true.
    """
    from app.sae import update_metadata

    meta = json.loads((sae_dir / "cfg.json").read_text()).get("metadata") or {}
    root, final_root = root.resolve(), final_root.resolve()
    changes = {}
    for key, value in meta.items():
        if isinstance(value, str) and value and Path(value).resolve().is_relative_to(root):
            changes[key] = str(final_root / Path(value).resolve().relative_to(root))
    update_metadata(sae_dir, changes)


def _evaluate(lm, sae, sae_dir: Path, corpus: Path, cfg: BuildConfig) -> None:
    from app.lm.corpus import load_contexts
    from app.training.evaluate import EVAL_FILE, evaluate_sae, save_eval

    contexts = load_contexts(lm, corpus, cfg.context_size, n_tokens=cfg.eval_tokens, seed=cfg.seed)
    save_eval(evaluate_sae(sae, lm, contexts, batch_size=32), sae_dir / EVAL_FILE)


def _index(lm, sae, layout: BundleLayout, cfg: BuildConfig) -> None:
    from app.index.builder import run_index
    from app.index.config import IndexConfig

    icfg = IndexConfig(context_size=cfg.context_size, batch_contexts=32, window_before=16, window_after=8)
    run_index(lm, sae, layout.val_corpus, cfg.index_tokens, layout.sae_index, icfg, sae_dir=layout.sae_dir)
