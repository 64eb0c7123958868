"""Attribution on a trained model (the small demo build: a trained LM and SAE): ablating the 10 top-attributed
latent nodes lowers log p(target) more than ablating 10 random active ones, and the attribution ranks single
ablations well (Spearman)."""

from __future__ import annotations

import json
import random

import pytest

from app.steering import ablation_deltas, attribute_ids, ranked_nodes


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from app.demo.bundle import build_demo
    from app.lm import load_lm
    from app.sae import load_sae

    bundle = build_demo(tmp_path_factory.mktemp("cache"), small=True)
    docs = [json.loads(line)["text"] for line in (bundle.root / "corpus" / "val.jsonl").read_text().splitlines()]
    return load_lm(bundle.model_dir, device="cpu"), {"demo": load_sae(bundle.sae_dir)}, docs[:6]


def _nodes(rows):
    return [(n["sae"], n["latent"], n["position"]) for n in rows]


def test_top_attributed_latents_matter_more_than_random_ones(demo):
    lm, saes, docs = demo
    rng = random.Random(0)
    top_deltas, random_deltas = [], []
    for doc in docs:
        res = attribute_ids(lm, saes, lm.token_ids(doc)[:40])
        nodes = ranked_nodes(res)
        assert len(nodes) > 100
        top = sorted(nodes, key=lambda n: -n["attribution"])[:10]  # the ten that support the target most
        top_d, random_d = ablation_deltas(lm, saes, res.ids, res.position, res.target,
                                          [_nodes(top), _nodes(rng.sample(nodes, 10))])
        top_deltas.append(top_d)
        random_deltas.append(random_d)
    wins = sum(t < r for t, r in zip(top_deltas, random_deltas))
    assert wins >= len(docs) - 1, (top_deltas, random_deltas)
    assert sum(top_deltas) < sum(random_deltas) and max(top_deltas) < 0


def test_attribution_ranks_single_ablations(demo):
    from benchmarks.attribution import spearman

    lm, saes, docs = demo
    res = attribute_ids(lm, saes, lm.token_ids(docs[0])[:40])
    rows = ranked_nodes(res, 20)
    measured = ablation_deltas(lm, saes, res.ids, res.position, res.target, [[n] for n in _nodes(rows)])
    rho = spearman([-r["attribution"] for r in rows], measured)
    assert rho > 0.6, rho


def test_spearman_helper():
    from benchmarks.attribution import ranks, spearman

    assert ranks([3.0, 1.0, 3.0, 2.0]) == [3.5, 1.0, 3.5, 2.0]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 400]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert spearman([1, 1, 1], [1, 2, 3]) != spearman([1, 1, 1], [1, 2, 3])  # nan: one side is constant
