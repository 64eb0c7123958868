"""Lazy loss effects (app/index/lazy_loss.py): computed on a latent's first view, cached, equal to the eager ones
and to the one-example-at-a-time brute force."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
from dataclasses import replace

import numpy as np
import pytest
import torch

from app.index.activations import fetch_rows
from app.index.config import IndexConfig
from app.index.examples import ExampleSet
from app.index.finalize import loss_effect_mode
from app.index.lazy_loss import ensure_loss_effects
from app.index.service import IndexMissing, latent_dashboard
from app.index.store import connect, from_blob, get_meta
from tests.index._index_brute import HOOK, N_ROWS, brute_loss_effects


@pytest.fixture(scope="module")
def lazy_db(tmp_path_factory, tiny_lm, tiny_sae, corpus_file, index_cfg):
    """The shared index's settings, loss effects left lazy (a fresh copy per test: views change it)."""
    from app.index.builder import run_index

    db = tmp_path_factory.mktemp("lazy") / "index.db"
    run_index(tiny_lm, tiny_sae, corpus_file, N_ROWS * 32, db, replace(index_cfg, loss_effects_when="lazy"))
    return db


def _copy(db, to):
    to.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(db)) as src, closing(sqlite3.connect(to)) as dst:
        src.backup(dst)
    return to


@pytest.fixture
def fresh(lazy_db, tmp_path):
    return _copy(lazy_db, tmp_path / "index.db")


class Forwards:
    """Counts the LM's forward calls."""

    def __init__(self, lm):
        self.n = 0
        self.handle = lm.model.register_forward_pre_hook(self._count)

    def _count(self, *_):
        self.n += 1

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.handle.remove()


def _top(db, latent):
    with closing(connect(db, readonly=True)) as conn:
        n, width, loss, pos, grp = conn.execute(
            "SELECT n, width, loss, positions, groups FROM examples WHERE latent = ? AND kind = 'top'",
            (latent,)).fetchone()
    return (None if loss is None else from_blob(loss, "float32", (n, width)).copy(),
            from_blob(pos, "int64").copy(), from_blob(grp, "int32").copy())


def _latents_with_examples(db):
    with closing(connect(db, readonly=True)) as conn:
        return [r[0] for r in conn.execute("SELECT latent FROM examples WHERE kind = 'top' ORDER BY n DESC")]


def test_lazy_equals_eager_and_the_brute_force(fresh, built, tiny_lm, tiny_sae, corpus_file, index_cfg):
    with closing(connect(fresh, readonly=True)) as conn:
        assert get_meta(conn, "loss_effects") == "lazy"
    latent = _latents_with_examples(fresh)[0]
    assert latent_dashboard(fresh, latent)["loss_effects"] == "pending"
    assert all(e["loss_effect"] is None for e in latent_dashboard(fresh, latent)["top_examples"])
    assert ensure_loss_effects(fresh, tiny_lm, tiny_sae, HOOK, latent) == "computed"
    lazy, pos, grp = _top(fresh, latent)
    eager, eager_pos, _ = _top(built, latent)
    np.testing.assert_array_equal(pos, eager_pos)  # the same examples …
    np.testing.assert_array_equal(np.isnan(lazy), np.isnan(eager))
    np.testing.assert_allclose(np.nan_to_num(lazy), np.nan_to_num(eager), rtol=1e-3, atol=2e-5)  # … same effects
    chosen = grp < index_cfg.loss_effect_top
    rows = fetch_rows(tiny_lm, corpus_file, index_cfg.context_size, set((pos // index_cfg.context_size).tolist()))
    want = brute_loss_effects(tiny_lm, tiny_sae, HOOK, rows, torch.full((int(chosen.sum()),), latent),
                              torch.from_numpy(pos[chosen]), index_cfg)
    assert want.nan_to_num().abs().max() > 1e-3
    torch.testing.assert_close(torch.from_numpy(lazy[chosen]).nan_to_num(), want.nan_to_num(), rtol=1e-3, atol=2e-5)
    d = latent_dashboard(fresh, latent)
    assert d["loss_effects"] == "computed" and all(e["loss_effect"] is not None for e in d["top_examples"])


def test_second_view_does_not_recompute(fresh, tiny_lm, tiny_sae):
    latent = _latents_with_examples(fresh)[1]
    with Forwards(tiny_lm) as first:
        ensure_loss_effects(fresh, tiny_lm, tiny_sae, HOOK, latent)
    with Forwards(tiny_lm) as second:
        assert ensure_loss_effects(fresh, tiny_lm, tiny_sae, HOOK, latent) == "computed"
    assert first.n >= 2 and second.n == 0


def test_concurrent_first_views_compute_once(fresh, tmp_path, tiny_lm, tiny_sae):
    latent = _latents_with_examples(fresh)[2]
    with Forwards(tiny_lm) as alone:  # one computation of it, on another copy
        ensure_loss_effects(_copy(fresh, tmp_path / "other" / "index.db"), tiny_lm, tiny_sae, HOOK, latent)
    results: list[str] = []
    with Forwards(tiny_lm) as both:
        threads = [threading.Thread(target=lambda: results.append(
            ensure_loss_effects(fresh, tiny_lm, tiny_sae, HOOK, latent))) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == ["computed"] * 3
    lazy, _, _ = _top(fresh, latent)
    assert lazy is not None and np.isfinite(lazy).any()
    with closing(connect(fresh, readonly=True)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert both.n == alone.n > 0  # one computation, not three
    with Forwards(tiny_lm) as again:
        ensure_loss_effects(fresh, tiny_lm, tiny_sae, HOOK, latent)
    assert again.n == 0


def test_read_only_index_stays_pending_and_computes_nothing(fresh, tiny_lm, tiny_sae, monkeypatch):
    latent = _latents_with_examples(fresh)[0]
    monkeypatch.setattr("app.index.lazy_loss.os.access", lambda *a: False)
    with Forwards(tiny_lm) as f:
        assert ensure_loss_effects(fresh, tiny_lm, tiny_sae, HOOK, latent) == "pending"
    assert f.n == 0 and _top(fresh, latent)[0] is None


def test_missing_index_and_off(tmp_path, built, tiny_lm, tiny_sae):
    with pytest.raises(IndexMissing, match="no latent index"):
        ensure_loss_effects(tmp_path / "nope.db", tiny_lm, tiny_sae, HOOK, 0)
    latent = _latents_with_examples(built)[0]
    assert ensure_loss_effects(built, tiny_lm, tiny_sae, HOOK, latent) == "computed"  # eager: already there


def test_off_index_says_off(tmp_path, tiny_lm, tiny_sae, corpus_file, index_cfg):
    from app.index.builder import run_index

    db = tmp_path / "index.db"
    run_index(tiny_lm, tiny_sae, corpus_file, 4 * 32, db, replace(index_cfg, loss_effects=False))
    latent = _latents_with_examples(db)[0]
    with Forwards(tiny_lm) as f:
        assert ensure_loss_effects(db, tiny_lm, tiny_sae, HOOK, latent) == "off"
    assert f.n == 0 and latent_dashboard(db, latent)["loss_effects"] == "off"


def test_auto_rule_compares_ablated_tokens_with_the_pass():
    cfg = IndexConfig(context_size=32, window_before=4, window_after=2)
    # Two latents in row 0 (window ends 11 and 21), one in row 1 (end 32, clipped): 11 + 21 + 32 tokens.
    ex = ExampleSet(torch.tensor([1, 2, 1]), torch.tensor([8, 18, 32 + 30]), torch.zeros(3, dtype=torch.long),
                    torch.zeros(3, dtype=torch.long), torch.ones(3))
    assert loss_effect_mode(cfg, ex, 4, 64) == "eager"
    assert loss_effect_mode(cfg, ex, 4, 63) == "lazy"
    assert loss_effect_mode(replace(cfg, loss_effects_when="lazy"), ex, 4, 10 ** 6) == "lazy"
    assert loss_effect_mode(replace(cfg, loss_effects=False), ex, 4, 64) == "off"
    with pytest.raises(ValueError, match="loss_effects_when"):
        IndexConfig(loss_effects_when="sometimes")
