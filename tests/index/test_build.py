"""End to end on a tiny model: the one-pass index equals a dense brute force; resume, extend, read while writing."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

import pytest
import torch

from app.index import collector as collector_mod
from app.index.activations import corpus_rows, keep_mask
from app.index.builder import run_index
from app.index.store import connect, get_meta, load_state
from app.lm.hooks import capture
from tests.index._index_brute import HOOK, N_ROWS, assert_matches_brute


@pytest.fixture(scope="module")
def quick_cfg(index_cfg):
    """The same answer-changing settings without the (slow, separately tested) ablation loss effects."""
    return replace(index_cfg, loss_effects=False)


def dense_reference(lm, sae, corpus, cfg, n_rows, norm_ref):
    """Dense [rows, T, d_sae] activations with skipped positions zeroed, batched like the index."""
    rows = list(corpus_rows(lm, corpus, cfg.context_size, 0, n_rows))
    out = []
    for b in range(0, n_rows, cfg.batch_contexts):
        ids = torch.tensor(rows[b:b + cfg.batch_contexts])
        h = capture(lm, ids, None, *HOOK)
        keep = keep_mask(lm, ids, h, cfg.outlier_factor, norm_ref)
        out.append(sae.encode(h).detach() * keep.unsqueeze(-1))
    return torch.cat(out), rows


def dense_pre_reference(lm, sae, corpus, cfg, n_rows, norm_ref):
    """Dense [rows, T, d_sae] pre-activations and the [rows, T] mask of counted positions."""
    rows = list(corpus_rows(lm, corpus, cfg.context_size, 0, n_rows))
    pre, keep = [], []
    for b in range(0, n_rows, cfg.batch_contexts):
        ids = torch.tensor(rows[b:b + cfg.batch_contexts])
        h = capture(lm, ids, None, *HOOK)
        keep.append(keep_mask(lm, ids, h, cfg.outlier_factor, norm_ref))
        pre.append(sae.pre_acts(h).detach())
    return torch.cat(pre), torch.cat(keep)


def read_state(db):
    with connect(db, readonly=True) as conn:
        return load_state(conn), get_meta(conn, "norm_reference"), get_meta(conn, "tokens_seen")


def assert_same_state(a, b):
    for name, t in a.tensors().items():
        u = getattr(b, name)
        if t.is_floating_point():
            torch.testing.assert_close(t, u, rtol=1e-5, atol=1e-6, msg=name)
        else:
            assert torch.equal(t, u), name


def test_index_equals_dense_brute_force(built, tiny_lm, tiny_sae, corpus_file, index_cfg):
    state, norm_ref, seen = read_state(built)
    assert norm_ref and norm_ref > 0
    acts, rows = dense_reference(tiny_lm, tiny_sae, corpus_file, index_cfg, N_ROWS, norm_ref)
    ids = torch.tensor(rows)
    kept = ~tiny_lm.special_mask(ids)
    assert seen < int(kept.sum())  # outliers were skipped as well as special tokens
    assert (acts > 0).any(-1).any() and (acts > 0).sum() < acts.numel() / 4  # latents fire, sparsely
    assert_matches_brute(state, acts, index_cfg)
    with connect(built, readonly=True) as conn:
        counts = dict(conn.execute("SELECT latent, count FROM latents"))
    assert [counts[i] for i in range(tiny_sae.d_sae)] == state.count.tolist()


def test_resume_after_a_crash_equals_single_run(tmp_path, built, tiny_lm, tiny_sae, corpus_file, quick_cfg,
                                                monkeypatch):
    db = tmp_path / "index.db"
    real = collector_mod.Collector.update
    calls = {"n": 0}

    def crashing(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:  # mid-way through the third batch
            raise RuntimeError("killed")
        return real(self, *a, **kw)

    monkeypatch.setattr(collector_mod.Collector, "update", crashing)
    with pytest.raises(RuntimeError, match="killed"):
        run_index(tiny_lm, tiny_sae, corpus_file, N_ROWS * 32, db, quick_cfg)
    with connect(db, readonly=True) as conn:
        assert get_meta(conn, "rows_done") == 2 * quick_cfg.batch_contexts
        assert get_meta(conn, "status") == "building"
    monkeypatch.setattr(collector_mod.Collector, "update", real)
    run_index(tiny_lm, tiny_sae, corpus_file, N_ROWS * 32, db, quick_cfg)
    assert_same_state(read_state(db)[0], read_state(built)[0])
    assert read_state(db)[2] == read_state(built)[2]


def test_extension_equals_single_run(tmp_path, built, tiny_lm, tiny_sae, corpus_file, quick_cfg):
    db = tmp_path / "index.db"
    run_index(tiny_lm, tiny_sae, corpus_file, 5 * 32, db, quick_cfg)  # 5 rows: not batch-aligned
    first = read_state(db)[0]
    run_index(tiny_lm, tiny_sae, corpus_file, N_ROWS * 32, db, quick_cfg)
    assert_same_state(read_state(db)[0], read_state(built)[0])
    assert not torch.equal(first.count, read_state(db)[0].count)
    with connect(db, readonly=True) as conn:
        assert get_meta(conn, "status") == "complete"
        assert get_meta(conn, "tokens_total") == N_ROWS * 32


def test_other_settings_refuse_to_extend(tmp_path, built, tiny_lm, tiny_sae, corpus_file, index_cfg):
    with pytest.raises(ValueError, match="top_k"):
        run_index(tiny_lm, tiny_sae, corpus_file, N_ROWS * 32, built, replace(index_cfg, top_k=3))


def test_database_reads_while_index_is_written(tmp_path, tiny_lm, tiny_sae, corpus_file, quick_cfg, monkeypatch):
    db = tmp_path / "index.db"
    seen: list[int] = []
    real = collector_mod.Collector.update
    reader: dict[str, sqlite3.Connection] = {}

    def observing(self, *a, **kw):
        if "conn" not in reader and db.exists():
            reader["conn"] = connect(db, readonly=True)
            reader["conn"].execute("BEGIN")  # a long read transaction must not block the writer
        if "conn" in reader:
            seen.append(get_meta(reader["conn"], "rows_done", 0))
        return real(self, *a, **kw)

    monkeypatch.setattr(collector_mod.Collector, "update", observing)
    run_index(tiny_lm, tiny_sae, corpus_file, N_ROWS * 32, db, quick_cfg)
    reader["conn"].execute("COMMIT")
    assert seen and all(s == 0 for s in seen)  # snapshot isolation: the open read saw a consistent state
    with connect(db, readonly=True) as ro:
        assert get_meta(ro, "rows_done") == N_ROWS
        with pytest.raises(sqlite3.OperationalError):
            ro.execute("DELETE FROM latents")
    reader["conn"].close()
