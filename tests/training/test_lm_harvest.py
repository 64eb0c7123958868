"""Harvesting activations from a tiny LM: special tokens dropped, cache reused, CLI end to end."""

from __future__ import annotations

import json

import pytest
import torch

from app.cli import main
from app.lm import load_lm
from app.lm.corpus import load_contexts
from app.lm.hooks import capture
from app.sae import load_sae
from app.training import activations as acts_mod
from app.training.activations import LMSource
from tests.conftest import TINY_TEXTS


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(TINY_TEXTS))
    return path


def test_blocks_hold_exactly_the_non_special_activations(tiny_model_dir, corpus, tmp_path) -> None:
    lm = load_lm(tiny_model_dir("gpt2"), device="cpu")
    ctx = load_contexts(lm, corpus, 16, seed=0)
    src = LMSource(lm, ctx, "resid_post", 1, block_tokens=64, lm_batch_size=3)
    ids = ctx[: src.ctx_per_block]
    full = capture(lm, ids, None, "resid_post", 1)
    keep = ~lm.special_mask(ids)
    assert (~keep).any()  # BOS at least
    block = src.rows(0, torch.arange(src.block_size(0)))
    assert torch.allclose(block, full[keep].float(), atol=1e-5)
    # With a cache, a second source reads shards instead of running the model.
    cached = LMSource(lm, ctx, "resid_post", 1, block_tokens=64, cache_dir=tmp_path / "cache")
    cached.write_cache = True
    first = cached.rows(1, torch.arange(cached.block_size(1)))
    assert (tmp_path / "cache" / "rank0-block000001.safetensors").exists()
    again = LMSource(lm, ctx, "resid_post", 1, block_tokens=64, cache_dir=tmp_path / "cache")

    def no_model(*a, **k):
        raise AssertionError("harvested although the block was cached")

    orig = acts_mod.LMSource._harvest
    acts_mod.LMSource._harvest = no_model
    try:
        assert torch.equal(again.rows(1, torch.arange(again.block_size(1))), first)
    finally:
        acts_mod.LMSource._harvest = orig


def test_cli_trains_from_a_model_and_corpus(tiny_model_dir, corpus, tmp_path, capsys) -> None:
    out = tmp_path / "sae"
    rc = main(["train", "--model", str(tiny_model_dir("gpt2")), "--hook", "resid_post", "--layer", "1",
               "--corpus", str(corpus), "--d-sae", "64", "--l0-coefficient", "0.01", "--tokens", "1024",
               "--batch-size", "128", "--context-size", "32", "--buffer-tokens", "256",
               "--activation-cache", str(tmp_path / "cache"), "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    sae = load_sae(out)
    assert sae.d_in == 32 and sae.d_sae == 64
    meta = json.loads((out / "cfg.json").read_text())["metadata"]
    assert meta["hook_name"] == "blocks.1.hook_resid_post" and meta["context_size"] == 32
    assert (out / "sparsity.safetensors").exists()
    shards = list((tmp_path / "cache").glob("*/rank0-block*.safetensors"))
    assert shards and list((tmp_path / "cache").glob("*/manifest.json"))
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 8
