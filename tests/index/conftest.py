"""Fixtures for the index tests: a tiny LM, a random JumpReLU SAE whose latents fire sometimes, a corpus."""

from __future__ import annotations

import random

import pytest
import torch

from app.index.config import IndexConfig
from app.lm.hooks import capture
from tests.index._index_brute import HOOK, N_ROWS

WORDS = ("the red fox cat dog jumps over lazy river Alice Bob said apples bread Paris rain sunny bird sang "
         "cold morning slept green warm blue 3 4 7 + = ? ! , .").split()


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory):
    rng = random.Random(0)
    paras = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40))) for _ in range(120)]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n\n".join(paras))
    return path


@pytest.fixture(scope="session")
def index_cfg():
    return IndexConfig(context_size=32, batch_contexts=4, top_k=5, n_intervals=3, per_interval=2,
                       window_before=4, window_after=2, n_logits=4, n_neighbors=3, commit_every=1,
                       outlier_factor=1.1,  # low, so the tiny random model has outliers
                       loss_effects_when="eager")  # the shared index has them all (lazy: test_lazy_loss.py)


@pytest.fixture(scope="session")
def tiny_sae(tiny_lm, corpus_file, index_cfg):
    """A random SAE on blocks.1.hook_resid_post with per-latent thresholds at the 80–99th percentile."""
    from app.index.activations import corpus_rows
    from app.sae import JumpReLUSAE

    sae = JumpReLUSAE.create(tiny_lm.d_model, 48, seed=0, metadata={
        "model_name": str(tiny_lm.name), "hook_name": "blocks.1.hook_resid_post", "context_size": 32})
    ids = torch.tensor(list(corpus_rows(tiny_lm, corpus_file, 32, 0, 8)))
    h = capture(tiny_lm, ids, None, *HOOK)[:, 1:].reshape(-1, tiny_lm.d_model)
    with torch.no_grad():
        pre = sae.pre_acts(h)
        q = torch.linspace(0.80, 0.99, sae.d_sae)
        theta = torch.stack([pre[:, i].quantile(q[i]) for i in range(sae.d_sae)]).clamp_min(1e-3)
        sae.log_threshold.copy_(theta.log())
    return sae


@pytest.fixture(scope="session")
def built(tmp_path_factory, tiny_lm, tiny_sae, corpus_file, index_cfg):
    """A finished index (with loss effects) over N_ROWS rows of the corpus."""
    from app.index.builder import run_index

    db = tmp_path_factory.mktemp("idx") / "index.db"
    run_index(tiny_lm, tiny_sae, corpus_file, N_ROWS * 32, db, index_cfg)
    return db
