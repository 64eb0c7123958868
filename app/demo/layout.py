"""The demo bundle's layout: the one home of its file and folder names and of the bundle version.

A leaf module (standard library only), so the builder (`app.demo.build`), the report (`app.demo.report`), the
cache logic (`app.demo.bundle`) and the web page (`app.web.report`) all read the same names without importing
each other. Layout of a bundle folder:

    model/            HF folder of the tiny LM
    sae/              native SAE folder (cfg.json, train_config.json, metrics.jsonl, eval.json, index.db)
    corpus/           train.jsonl (LM and SAE training), val.jsonl (LM validation, SAE eval, index corpus)
    eval_docs.jsonl   held-out documents with their concept spans, for the report
    lm_metrics.json   the LM's validation loss and unigram baseline
    report.json       the validation report
    build.json        bundle version, build sizes, stage seconds
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MODEL_DIR, SAE_DIR, CORPUS_DIR = "model", "sae", "corpus"
TRAIN_CORPUS_FILE, VAL_CORPUS_FILE = "train.jsonl", "val.jsonl"  # inside CORPUS_DIR
REPORT_FILE, LM_METRICS_FILE, BUILD_FILE = "report.json", "lm_metrics.json", "build.json"
EVAL_DOCS_FILE = "eval_docs.jsonl"  # held-out documents with their concept spans, for the report
# Files the pipeline writes into SAE_DIR: the eval (app.training.evaluate.EVAL_FILE) and the index database.
SAE_EVAL_FILE, SAE_INDEX_FILE = "eval.json", "index.db"
# Raised whenever a bundle built by older code would be wrong for this code (2: sae-lens 6 cfg.json without
# build-folder paths, exact θ, the index's θ window; 3: built-in explanations in index.db and their shares in
# the report): a cached bundle of another version is rebuilt.
BUNDLE_VERSION = 3
DEMO_NAME, SMALL_NAME = "demo", "demo-small"  # bundle folder names in the cache directory


@dataclass(frozen=True)
class BundleLayout:
    """Every path of a bundle rooted at `root` (nothing is read or checked)."""

    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike) -> BundleLayout:
        """The layout of the bundle folder `root`."""
        return cls(Path(root))

    @property
    def model_dir(self) -> Path:
        """The tiny LM's HF folder."""
        return self.root / MODEL_DIR

    @property
    def sae_dir(self) -> Path:
        """The SAE folder."""
        return self.root / SAE_DIR

    @property
    def corpus_dir(self) -> Path:
        """The folder of the training and validation corpora."""
        return self.root / CORPUS_DIR

    @property
    def train_corpus(self) -> Path:
        """JSONL documents the LM and SAE train on."""
        return self.corpus_dir / TRAIN_CORPUS_FILE

    @property
    def val_corpus(self) -> Path:
        """Held-out JSONL documents: LM validation loss, SAE eval, index corpus."""
        return self.corpus_dir / VAL_CORPUS_FILE

    @property
    def eval_docs(self) -> Path:
        """Held-out documents with concept spans (the report's ground truth)."""
        return self.root / EVAL_DOCS_FILE

    @property
    def lm_metrics(self) -> Path:
        """The LM's validation and unigram losses."""
        return self.root / LM_METRICS_FILE

    @property
    def report(self) -> Path:
        """The validation report."""
        return self.root / REPORT_FILE

    @property
    def build_info(self) -> Path:
        """Bundle version, build sizes and stage seconds."""
        return self.root / BUILD_FILE

    @property
    def sae_eval(self) -> Path:
        """The SAE's eval.json."""
        return self.sae_dir / SAE_EVAL_FILE

    @property
    def sae_index(self) -> Path:
        """The SAE's index database (dashboards and explanations)."""
        return self.sae_dir / SAE_INDEX_FILE
