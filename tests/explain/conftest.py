"""Fixtures for the explain tests: a real index (tiny LM, random SAE whose latents fire sometimes) per test."""

from __future__ import annotations

import random
import shutil

import pytest
import torch

WORDS = ("the red fox cat dog jumps over lazy river Alice Bob said apples bread Paris rain sunny bird sang "
         "cold morning slept green warm blue 3 4 7 + = ? ! , .").split()
D_SAE = 24


@pytest.fixture(scope="session")
def explain_index(tmp_path_factory, tiny_lm):
    """(SAE folder, index.db) of a finished index over a small random corpus; copy it before writing to it."""
    from app.index.activations import corpus_rows
    from app.index.builder import run_index
    from app.index.config import IndexConfig
    from app.lm.hooks import capture
    from app.sae import JumpReLUSAE

    rng = random.Random(0)
    paras = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40))) for _ in range(80)]
    corpus = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    corpus.write_text("\n\n".join(paras))
    sae = JumpReLUSAE.create(tiny_lm.d_model, D_SAE, seed=0, metadata={
        "model_name": str(tiny_lm.name), "hook_name": "blocks.1.hook_resid_post", "context_size": 32})
    ids = torch.tensor(list(corpus_rows(tiny_lm, corpus, 32, 0, 8)))
    h = capture(tiny_lm, ids, None, "resid_post", 1)[:, 1:].reshape(-1, tiny_lm.d_model)
    with torch.no_grad():
        pre = sae.pre_acts(h)
        q = torch.linspace(0.85, 0.99, sae.d_sae)
        theta = torch.stack([pre[:, i].quantile(q[i]) for i in range(sae.d_sae)]).clamp_min(1e-3)
        theta[-1] = 1e6  # one latent that never fires: nothing to explain
        sae.log_threshold.copy_(theta.log())
    folder = tmp_path_factory.mktemp("sae")
    sae.save(str(folder))
    cfg = IndexConfig(context_size=32, batch_contexts=4, top_k=6, n_intervals=3, per_interval=3,
                      window_before=6, window_after=3, loss_effects=False)
    run_index(tiny_lm, sae, corpus, 40 * 32, folder / "index.db", cfg, sae_dir=folder)
    return folder


@pytest.fixture
def sae_dir(explain_index, tmp_path):
    """A private copy of the indexed SAE folder (tests write explanations into it)."""
    dst = tmp_path / "sae"
    shutil.copytree(explain_index, dst)
    return dst
