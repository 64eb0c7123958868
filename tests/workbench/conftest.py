"""Workbench fixtures: a tiny LM, a corpus, a saved random SAE whose latents fire sometimes, and its sample."""

from __future__ import annotations

import random

import pytest
import torch

CTX = 32
SAMPLE_TOKENS = 384  # 12 contexts
WORDS = ("the red fox cat dog jumps over lazy river Alice Bob said apples bread Paris rain sunny bird sang "
         "cold morning slept green warm blue 3 4 7 + = ? ! , .").split()


@pytest.fixture(scope="session")
def wb_corpus(tmp_path_factory):
    rng = random.Random(1)
    paras = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40))) for _ in range(80)]
    path = tmp_path_factory.mktemp("wb-corpus") / "corpus.txt"
    path.write_text("\n\n".join(paras))
    return path


@pytest.fixture(scope="session")
def wb_sae_folder(tmp_path_factory, tiny_lm, tiny_model_dir, wb_corpus):
    """A random SAE on blocks.0.hook_resid_post with θ at per-latent quantiles 0.7–0.98 of its pre-activations."""
    from app.lm.corpus import load_contexts
    from app.lm.hooks import capture
    from app.sae import JumpReLUSAE

    sae = JumpReLUSAE.create(tiny_lm.d_model, 24, seed=3, metadata={
        "model_name": str(tiny_model_dir("llama")), "hook_name": "blocks.0.hook_resid_post", "context_size": CTX})
    ids = load_contexts(tiny_lm, wb_corpus, CTX, n_tokens=SAMPLE_TOKENS, shuffle=False)
    h = capture(tiny_lm, ids, None, "resid_post", 0)[:, 1:].reshape(-1, tiny_lm.d_model)
    with torch.no_grad():
        pre = sae.pre_acts(h)
        q = torch.linspace(0.7, 0.98, sae.d_sae)
        theta = torch.stack([pre[:, i].quantile(q[i]) for i in range(sae.d_sae)]).clamp_min(1e-3)
    sae.set_threshold(theta)
    folder = tmp_path_factory.mktemp("wb-saes") / "wb-sae"
    sae.save(folder)
    return folder


@pytest.fixture(scope="session")
def wb_sae(wb_sae_folder):
    from app.sae import load_sae

    sae = load_sae(wb_sae_folder, device="cpu")
    sae.requires_grad_(False)
    return sae


@pytest.fixture(scope="session")
def wb_contexts(tiny_lm, wb_corpus):
    from app.lm.corpus import load_split

    return load_split(tiny_lm, wb_corpus, CTX, n_tokens=SAMPLE_TOKENS, shuffle=False)


@pytest.fixture(scope="session")
def wb_cache(tiny_lm, wb_sae, wb_contexts):
    from app.workbench.cache import build_cache

    contexts, split = wb_contexts
    return build_cache(tiny_lm, wb_sae, contexts, split)
