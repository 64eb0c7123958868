"""One outlier rule for training, eval and the index: a planted huge-norm token is excluded by all three exactly
where a brute-force mask (special tokens, norm > factor × median non-special norm of the reference sample) says."""

from __future__ import annotations

import math

import pytest
import torch

from app.index.builder import run_index
from app.index.config import IndexConfig
from app.index.store import connect, get_meta
from app.lm import load_lm
from app.lm.corpus import iter_contexts, iter_texts, load_split
from app.lm.hooks import capture
from app.sae.jumprelu import JumpReLUSAE
from app.training.config import TrainConfig
from app.training.data import build_data
from app.training.distributed import DistContext
from app.training.evaluate import evaluate_sae
from tests.conftest import TINY_TEXTS

HOOK = ("resid_post", 0)
FACTOR = 10.0


@pytest.fixture(scope="module")
def planted(tiny_model_dir, tmp_path_factory):
    """A tiny Llama whose embedding of one frequent word is scaled ×1000: that token's residual norm explodes."""
    lm = load_lm(tiny_model_dir("llama"), device="cpu")
    token = lm.tokenizer(" fox", add_special_tokens=False)["input_ids"][0]
    with torch.no_grad():
        lm.model.get_input_embeddings().weight[token] *= 1000.0
    folder = tmp_path_factory.mktemp("planted")
    lm.model.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    corpus = folder / "corpus.txt"
    corpus.write_text("\n\n".join(TINY_TEXTS))
    return load_lm(folder, device="cpu"), folder, corpus, token


def brute_mask(lm, ids: torch.Tensor, h: torch.Tensor, ref_ids: torch.Tensor, ref_h: torch.Tensor):
    """(kept [B, T], reference norm): the rule written out with plain loops over the reference sample."""
    special = set(lm.tokenizer.all_special_ids)
    ref_norms = sorted(float(ref_h[b, t].norm()) for b in range(ref_ids.shape[0]) for t in range(ref_ids.shape[1])
                       if int(ref_ids[b, t]) not in special)
    ref = ref_norms[(len(ref_norms) - 1) // 2]  # torch.median: the lower middle value
    kept = torch.zeros(ids.shape, dtype=torch.bool)
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1]):
            kept[b, t] = int(ids[b, t]) not in special and float(h[b, t].norm()) <= FACTOR * ref
    return kept, ref


def test_planted_position_is_an_outlier(planted):
    lm, _, corpus, token = planted
    ids = torch.tensor(list(iter_contexts(lm, iter_texts(corpus), 16))[:6])
    h = capture(lm, ids, None, *HOOK)
    kept, ref = brute_mask(lm, ids, h, ids, h)
    assert (ids == token).any()
    assert not kept[ids == token].any()  # the planted token is excluded ...
    assert kept[(ids != token) & ~lm.special_mask(ids)].all()  # ... and nothing else but special tokens


def test_training_harvest_drops_the_brute_force_outliers(planted, tmp_path):
    lm, folder, corpus, token = planted
    cfg = TrainConfig(model=str(folder), hook=HOOK[0], layer=HOOK[1], corpus=str(corpus), context_size=16,
                      lm_batch_size=4, d_sae=8, tokens=256, batch_size=64, buffer_tokens=128, device="cpu",
                      out=str(tmp_path / "sae"), outlier_factor=FACTOR)
    plan = build_data(cfg, DistContext())
    contexts, _ = load_split(lm, corpus, 16, n_tokens=math.ceil(cfg.tokens * 1.1) + 16, seed=cfg.seed, part="train")
    ref_ids = contexts[: cfg.lm_batch_size]
    src = plan.buffer.source
    ids = contexts[: src.ctx_per_block]
    h = capture(lm, ids, None, *HOOK)
    kept, ref = brute_mask(lm, ids, h, ref_ids, capture(lm, ref_ids, None, *HOOK))
    assert (ids == token).any() and not kept[ids == token].any()
    assert src.norm_ref == pytest.approx(ref, rel=1e-6)
    assert plan.metadata["outliers"]["reference_norm"] == pytest.approx(ref, rel=1e-6)
    assert plan.metadata["outliers"]["factor"] == FACTOR
    block = src.rows(0, torch.arange(src.block_size(0)))
    torch.testing.assert_close(block, h[kept].float())


def test_eval_and_index_exclude_the_same_positions(planted, tmp_path):
    lm, _, corpus, token = planted
    rows = torch.tensor(list(iter_contexts(lm, iter_texts(corpus), 16))[:8])
    h = capture(lm, rows, None, *HOOK)
    kept, ref = brute_mask(lm, rows, h, rows[:4], h[:4])
    assert (rows == token).any() and not kept[rows == token].any()
    sae = JumpReLUSAE.create(lm.d_model, 24, seed=0, metadata={"hook_name": f"blocks.{HOOK[1]}.hook_{HOOK[0]}"})
    # Eval, reference from its first batch of 4 contexts.
    result = evaluate_sae(sae, lm, rows, batch_size=4, n_boot=0, outlier_factor=FACTOR)
    assert result["tokens"] == int(kept.sum())
    assert result["outliers"]["reference_norm"] == pytest.approx(ref, rel=1e-6)
    assert result["outliers"]["excluded_positions"] == int((~kept & ~lm.special_mask(rows)).sum())
    x, x_hat = h[kept].double(), sae.decode(sae.encode(h[kept])).detach().double()
    fvu = float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())
    assert result["fvu"] == pytest.approx(fvu, rel=1e-4)
    # Index, reference from its first batch of 4 rows (the same rows, in corpus order).
    icfg = IndexConfig(context_size=16, batch_contexts=4, outlier_factor=FACTOR, loss_effects=False, top_k=2,
                       n_intervals=2, per_interval=1)
    db = run_index(lm, sae, corpus, 8 * 16, tmp_path / "index.db", icfg)
    with connect(db, readonly=True) as conn:
        assert get_meta(conn, "norm_reference") == pytest.approx(ref, rel=1e-6)
        assert int(get_meta(conn, "tokens_seen")) == int(kept.sum())
