"""Shared fixtures: a locally trained tokenizer and tiny random HF models saved with save_pretrained."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

# Property tests draw fresh examples on every local run (exploration); CI (.ci/run sets HYPOTHESIS_PROFILE=ci)
# draws the same examples every time, so a CI verdict is reproducible. `make fuzz` explores many seeds.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY_TEXTS = [
    "The red fox jumps over the lazy dog near the river.",
    "Alice said: \"I like green apples and warm bread.\"",
    "Is it raining in Paris today? No, it is sunny.",
    "3 + 4 = 7 and 2 + 2 = 4, said Bob with a smile.",
    "A blue bird sang in the cold morning while the cat slept.",
] * 8


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from app.lm.tiny import train_tokenizer

    return train_tokenizer(TINY_TEXTS, vocab_size=300)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """Factory: folder of a tiny random model of the given family (cached per session)."""
    from app.lm.tiny import save_tiny_model

    cache: dict[str, object] = {}

    def make(model_type: str = "llama"):
        if model_type not in cache:
            folder = tmp_path_factory.mktemp(f"tiny-{model_type}")
            cache[model_type] = save_tiny_model(folder, model_type, tiny_tokenizer)
        return cache[model_type]

    return make


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir):
    """A tiny Llama-architecture LM loaded through load_lm on CPU."""
    from app.lm import load_lm

    return load_lm(tiny_model_dir("llama"), device="cpu")


@pytest.fixture(scope="session")
def tiny_sae(tiny_lm):
    """A random JumpReLU SAE on the tiny Llama's layer-1 residual stream (steering and encoding tests;
    tests/index has its own, with thresholds fitted to its corpus)."""
    from tests.steering.helpers import make_sae

    return make_sae(tiny_lm.d_model)


def build_tiny_index(sae_folder, tmp_path_factory) -> None:
    """The real latent index (app.index) for a saved SAE on a tiny corpus, written to `sae_folder/index.db`."""
    from app.index.builder import run_index
    from app.index.config import IndexConfig
    from app.lm import load_lm
    from app.sae import load_sae

    corpus = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    corpus.write_text("\n\n".join(TINY_TEXTS))
    sae = load_sae(sae_folder)
    lm = load_lm(sae.cfg.metadata["model_name"], device="cpu")
    cfg = IndexConfig(context_size=32, batch_contexts=4, top_k=5, n_intervals=3, per_interval=2,
                      window_before=6, window_after=3)
    run_index(lm, sae, corpus, 1024, sae_folder / "index.db", cfg, sae_dir=sae_folder)


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium (the Debian package, tests/web/browser_support.py flags) for one test module."""
    from playwright.sync_api import sync_playwright

    from tests.web.browser_support import launch_chromium

    with sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()
