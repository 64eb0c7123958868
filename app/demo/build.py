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

from app.demo.world import Document, generate_documents

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]  # (what is happening, overall fraction done in [0, 1])

MODEL_DIR, SAE_DIR, CORPUS_DIR = "model", "sae", "corpus"
REPORT_FILE, LM_METRICS_FILE, BUILD_FILE = "report.json", "lm_metrics.json", "build.json"
# Raised whenever a bundle built by older code would be wrong for this code (2: sae-lens 6 cfg.json without
# build-folder paths, exact θ, the index's θ window; 3: built-in explanations in index.db and their shares in
# the report): a cached bundle of another version is rebuilt.
BUNDLE_VERSION = 3
EVAL_DOCS_FILE = "eval_docs.jsonl"  # held-out documents with their concept spans, for the report


@dataclass
class BuildConfig:
    """Every size of the demo build; saved as build.json in the bundle."""

    seed: int = 0  # world, LM and SAE seed
    train_docs: int = 42000  # documents the LM and SAE train on (~2.2M tokens; the SAE reads each once)
    val_docs: int = 400  # held-out documents: LM validation loss, SAE eval, index corpus
    eval_docs: int = 600  # held-out documents with labels: concept F1 in the report
    vocab_size: int = 1024  # BPE vocabulary cap (the world needs ~850)
    d_model: int = 64  # LM width
    n_layers: int = 2  # LM blocks; the SAE reads the residual stream between the halves
    # LM optimiser steps (seeds 0/1: 400 gave F1 0.88/0.97, steering 8/14; 800 gave 0.93/0.97, 21/27)
    lm_steps: int = 800
    lm_batch_size: int = 32  # LM rows per step
    lm_lr: float = 5e-3  # LM peak learning rate
    context_size: int = 64  # tokens per row for LM, SAE, eval and index
    d_sae: int = 1024  # SAE latents (256 merged concepts with unrelated tokens: F1 0.59 vs 0.76)
    target_l0: float = 12.0  # SAE target L0 (the trainer's controller adapts λ)
    sae_tokens: int = 2_000_000  # SAE training tokens (1M: mean lexical F1 0.90-0.92, 2M: 0.93)
    sae_batch_size: int = 1024  # SAE tokens per step (~1000 steps over the corpus)
    sae_lr: float | None = 4e-3  # SAE peak learning rate (None: the trainer's auto rule)
    sae_threshold_init: float = 0.1  # θ at init in normalised units (short run: start near the pre-act scale)
    eval_tokens: int = 16_384  # tokens for the SAE eval (L0, FVU, ΔLM loss)
    index_tokens: int = 16_384  # tokens indexed for dashboards
    steer_prompts: int = 32  # prompts in the steering check (8 gave a default colour share of 0.007-0.093)
    steer_tokens: int = 64  # tokens generated per prompt
    threads: int | None = None  # torch CPU threads; None: all cores when idle, 1 when they are busy

    def __post_init__(self) -> None:
        positive = ("train_docs", "val_docs", "eval_docs", "vocab_size", "d_model", "n_layers", "lm_steps",
                    "lm_batch_size", "context_size", "d_sae", "sae_tokens", "sae_batch_size", "eval_tokens",
                    "index_tokens", "steer_prompts", "steer_tokens")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"demo build setting {name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.target_l0 < self.d_sae:
            raise ValueError(f"target_l0 must be in (0, d_sae={self.d_sae}), got {self.target_l0}")
        if self.sae_tokens < self.sae_batch_size:
            raise ValueError("sae_tokens must be at least one SAE batch")

    @property
    def layer(self) -> int:
        """The block whose resid_post is the middle of the residual stream (block 0 of 2, 1 of 3 or 4)."""
        return (self.n_layers - 1) // 2

    @classmethod
    def small(cls) -> BuildConfig:
        """A scaled-down build (seconds) for tests: same pipeline, tiny sizes."""
        return cls(train_docs=300, val_docs=40, eval_docs=40, vocab_size=600, d_model=32, n_layers=2,
                   lm_steps=20, lm_batch_size=8, context_size=32, d_sae=64, target_l0=8.0, sae_tokens=16_384,
                   sae_batch_size=1024, eval_tokens=1024, index_tokens=1024, steer_prompts=2, steer_tokens=16,
                   threads=1)


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


def write_docs(path: Path, docs: list[Document], with_spans: bool = False) -> None:
    """JSONL, one document per line: `text` (read by app.lm.corpus) and optionally `spans`."""
    with open(path, "w", encoding="utf-8") as fh:
        for d in docs:
            row: dict = {"text": d.text}
            if with_spans:
                row["spans"] = [[s.start, s.end, s.concept] for s in d.spans]
            fh.write(json.dumps(row) + "\n")


def read_docs(path: Path) -> list[Document]:
    """Documents with spans written by `write_docs(..., with_spans=True)`."""
    from app.demo.world import Span

    docs = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            docs.append(Document(row["text"], [Span(int(a), int(b), str(c)) for a, b, c in row.get("spans", [])]))
    return docs


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
    (root / BUILD_FILE).write_text(json.dumps({"bundle_version": BUNDLE_VERSION, "config": asdict(cfg),
                                               "seconds": stages.seconds,
                                               "threads": choose_threads(cfg.threads)}, indent=2))
    return BuildResult(root, stages.seconds)


def _build(root: Path, final_root: Path, cfg: BuildConfig, stages: _Stages) -> None:
    from app.demo import lm_train
    from app.lm.tiny import train_tokenizer

    t = time.perf_counter()
    stages.report("world", "generating the synthetic world", 0.0)
    corpus = root / CORPUS_DIR
    corpus.mkdir()
    train_docs = generate_documents(cfg.train_docs, cfg.seed)
    val_docs = generate_documents(cfg.val_docs, cfg.seed + 1_000_001)
    eval_docs = generate_documents(cfg.eval_docs, cfg.seed + 2_000_003)
    write_docs(corpus / "train.jsonl", train_docs)
    write_docs(corpus / "val.jsonl", val_docs)
    write_docs(root / EVAL_DOCS_FILE, eval_docs, with_spans=True)
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
    lm_train.save_lm(model, tokenizer, root / MODEL_DIR, lm_cfg)
    lm_metrics = {"val_loss": lm_train.validation_loss(model, tokenizer, val_rows),
                  "unigram_loss": lm_train.unigram_loss(tokenizer, train_rows, val_rows),
                  "train_tokens": int(cfg.lm_steps * cfg.lm_batch_size * cfg.context_size)}
    (root / LM_METRICS_FILE).write_text(json.dumps(lm_metrics, indent=2))
    del model
    stages.finish("lm", t)

    t = time.perf_counter()
    sae_dir = _train_sae(root, final_root, cfg, stages)
    stages.finish("sae", t)

    from app.lm import load_lm
    from app.sae import load_sae

    lm = load_lm(root / MODEL_DIR, device="cpu")
    sae = load_sae(sae_dir, device="cpu", dtype="float32")

    t = time.perf_counter()
    stages.report("eval", "evaluating the SAE (L0, FVU, ΔLM loss)", 0.0)
    _evaluate(lm, sae, sae_dir, corpus / "val.jsonl", cfg)
    stages.finish("eval", t)

    t = time.perf_counter()
    stages.report("index", "indexing latent dashboards", 0.0)
    _index(lm, sae, sae_dir, corpus / "val.jsonl", cfg)
    stages.finish("index", t)

    t = time.perf_counter()
    stages.report("explain", "labelling latents (built-in explainer)", 0.0)
    from app.explain.runner import run_explain

    run_explain(sae_dir / "index.db", "builtin")
    stages.finish("explain", t)

    t = time.perf_counter()
    stages.report("report", "validating against ground truth", 0.0)
    from app.demo.report import build_report, save_report

    save_report(build_report(root, lm=lm, sae=sae, cfg=cfg), root / REPORT_FILE)
    stages.finish("report", t)


def _train_sae(root: Path, final_root: Path, cfg: BuildConfig, stages: _Stages) -> Path:
    """Train the SAE with the project's training pipeline (app.training.train) on the world's corpus."""
    from app.training.config import TrainConfig
    from app.training.trainer import train

    sae_dir = root / SAE_DIR
    tc = TrainConfig(model=str(root / MODEL_DIR), hook="resid_post", layer=cfg.layer,
                     corpus=str(root / CORPUS_DIR / "train.jsonl"), context_size=cfg.context_size,
                     lm_batch_size=64, d_sae=cfg.d_sae, target_l0=cfg.target_l0, tokens=cfg.sae_tokens,
                     batch_size=cfg.sae_batch_size, lr=cfg.sae_lr, threshold_init=cfg.sae_threshold_init,
                     buffer_tokens=min(262_144, cfg.sae_tokens), norm_tokens=min(65_536, cfg.sae_tokens),
                     out=str(sae_dir), device="cpu", seed=cfg.seed, checkpoint_every=0, progress=False)
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


def _index(lm, sae, sae_dir: Path, corpus: Path, cfg: BuildConfig) -> None:
    from app.index.builder import run_index
    from app.index.config import IndexConfig

    icfg = IndexConfig(context_size=cfg.context_size, batch_contexts=32, window_before=16, window_after=8)
    run_index(lm, sae, corpus, cfg.index_tokens, sae_dir / "index.db", icfg, sae_dir=sae_dir)
