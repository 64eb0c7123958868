"""The explanation store: per-explainer rows, hand-written texts kept and shown first, resume, subset, migration."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest

from app.explain import human, store
from app.explain.examples import ExampleSource
from app.explain.runner import Cancelled, parse_latents, run_explain
from app.index import service


def _alive(db) -> list[int]:
    with ExampleSource(db) as src:
        return src.alive_latents()


def test_put_get_list_and_shown_order(sae_dir):
    db = sae_dir / "index.db"
    with closing(store.open_db(db)) as conn:
        store.put_explanation(conn, 3, "first", "builtin", "v1", created=10.0)
        store.put_explanation(conn, 3, "second", "openai:m", "p2", created=20.0)
        assert store.get_explanation(conn, 3).text == "second"  # newest auto is shown
        assert store.get_explanation(conn, 3, "builtin").prompt_version == "v1"
        assert [e.explainer for e in store.list_explanations(conn, 3)] == ["builtin", "openai:m"]
        store.put_explanation(conn, 3, "hand", store.HUMAN, source="human", created=1.0)
        assert store.get_explanation(conn, 3).source == "human"  # human wins although older
        assert store.explainers(conn) == {"builtin": 1, "human": 1, "openai:m": 1}
        with pytest.raises(ValueError, match="reserved"):
            store.put_explanation(conn, 3, "auto text", store.HUMAN)
        with pytest.raises(ValueError, match="reserved"):
            store.put_explanation(conn, 3, "auto text", "builtin", source="human")
        with pytest.raises(ValueError, match="text"):
            store.put_explanation(conn, 3, "  ", "builtin")
    assert service.latent_dashboard(db, 3)["explanation"] == "hand"
    assert [r["latent"] for r in service.search_latents(db, "hand")] == [3]
    with closing(store.open_db(db)) as conn:
        store.delete_explanation(conn, 3, store.HUMAN)
    assert service.latent_dashboard(db, 3)["explanation"] == "second"
    assert service.search_latents(db, "hand") == []


def test_auto_run_never_overwrites_hand_written(sae_dir):
    db = sae_dir / "index.db"
    latent = _alive(db)[0]
    human.set_explanation(db, latent, "my own words")
    counts = run_explain(db, "builtin")
    assert counts.explained == len(_alive(db)) and counts.failed == 0
    with closing(store.open_db(db, readonly=True)) as conn:
        mine = store.get_explanation(conn, latent, store.HUMAN)
        auto = store.get_explanation(conn, latent, "builtin")
    assert mine.text == "my own words" and mine.source == "human"
    assert auto is not None and auto.source == "auto" and auto.text != "my own words"
    assert service.latent_dashboard(db, latent)["explanation"] == "my own words"
    human.set_explanation(db, latent, "")  # clearing the hand-written text shows the auto one
    assert service.latent_dashboard(db, latent)["explanation"] == auto.text


def test_rerun_resumes_and_subset(sae_dir):
    db = sae_dir / "index.db"
    alive = _alive(db)
    subset = alive[:2]
    c1 = run_explain(db, "builtin", latents=subset)
    assert c1.explained == 2 and c1.scored == 2
    with closing(store.open_db(db, readonly=True)) as conn:
        assert store.done_latents(conn, "builtin") == set(subset)
        before = {e.latent: e.created for e in store.list_explanations(conn, explainer="builtin")}
    c2 = run_explain(db, "builtin")
    assert c2.explained == len(alive) - 2 and c2.skipped == 2  # the subset was not redone
    assert c2.dead == 24 - len(alive) and 23 not in alive  # the never-firing latent
    with closing(store.open_db(db, readonly=True)) as conn:
        after = {e.latent: e.created for e in store.list_explanations(conn, explainer="builtin")}
        assert {i: after[i] for i in subset} == before
        assert store.scored_latents(conn, "builtin", "builtin", "precision") == set(alive)
    c3 = run_explain(db, "builtin")
    assert (c3.explained, c3.scored, c3.skipped, c3.dead) == (0, 0, len(alive), 24 - len(alive))


def test_cancel_keeps_work_and_rerun_finishes(sae_dir):
    db = sae_dir / "index.db"
    alive = _alive(db)
    polls = iter(range(10**6))
    with pytest.raises(Cancelled):
        run_explain(db, "builtin", latents=alive, should_stop=lambda: next(polls) >= 3)
    with closing(store.open_db(db, readonly=True)) as conn:
        assert store.done_latents(conn, "builtin") == set(alive[:3])
    c = run_explain(db, "builtin", latents=alive)
    assert c.explained == len(alive) - 3 and c.skipped == 3


def test_scores_sortable(sae_dir):
    db = sae_dir / "index.db"
    run_explain(db, "builtin")
    with closing(store.open_db(db, readonly=True)) as conn:
        ranked = store.ranked_latents(conn, "builtin", "builtin", "f1", limit=1000)
        values = {i: store.get_scores(conn, i, "builtin") for i, _ in ranked}
    f1 = [v for _, v in ranked if v is not None]
    assert f1 == sorted(f1, reverse=True) and len(ranked) == len(_alive(db))
    for i, v in ranked:
        assert {s.metric for s in values[i]} == {"precision", "recall", "f1"}
        assert next(s.value for s in values[i] if s.metric == "f1") == v


def test_legacy_explanations_migrate_as_human(sae_dir):
    db = sae_dir / "index.db"
    with closing(sqlite3.connect(db)) as raw, raw:  # an index written before app.explain existed
        raw.execute("DROP TABLE IF EXISTS latent_explanations")
        raw.execute("DELETE FROM meta WHERE key = 'explain_schema'")
        raw.execute("INSERT INTO explanations(latent, text, updated) VALUES (5, 'old note', 123.0)")
    with closing(store.open_db(db, readonly=True)) as conn:  # read-only: read as human, nothing migrated
        assert store.get_explanation(conn, 5).source == "human"
        assert store.get_explanation(conn, 5, "builtin") is None
    run_explain(db, "builtin", latents=[5])
    with closing(store.open_db(db, readonly=True)) as conn:
        e = store.get_explanation(conn, 5, store.HUMAN)
        assert (e.text, e.source, e.created) == ("old note", "human", 123.0)
    assert service.latent_dashboard(db, 5)["explanation"] == "old note"


def test_parse_latents():
    assert parse_latents("0-3, 7,2", 10) == [0, 1, 2, 3, 7]
    assert parse_latents(None, 10) is None and parse_latents(" ", 10) is None
    for bad, msg in (("3-1", "ends before"), ("x", "not a number"), ("0-10", "out of range"), ("1,,2", "not a")):
        with pytest.raises(ValueError, match=msg):
            parse_latents(bad, 10)


def test_views_for_pages(sae_dir):
    from app.explain import views

    db = sae_dir / "index.db"
    alive = _alive(db)
    assert views.explanation_fields(db, alive[0]) == {"explanation_source": None, "explanation_explainer": None,
                                                      "explanation_scores": {}}
    run_explain(db, "builtin")
    human.set_explanation(db, alive[0], "hand")
    f = views.explanation_fields(db, alive[0])
    assert f["explanation_source"] == "human" and f["explanation_scores"] == {}  # nobody scored the human text
    f = views.explanation_fields(db, alive[1])
    assert f["explanation_source"] == "auto" and f["explanation_explainer"] == "builtin"
    assert set(f["explanation_scores"]["builtin"]) == {"precision", "recall", "f1", "precision_n", "recall_n", "f1_n"}
    both = views.latent_explanations(db, alive[0])
    assert [(e["explainer"], e["shown"]) for e in both] == [("human", True), ("builtin", False)]
    top = views.ranked(db, limit=3)
    assert len(top) == 3 and top[0]["value"] >= top[-1]["value"]
    summary = views.explain_summary(db)
    assert summary["builtin"]["latents"] == len(alive) and summary["human"]["latents"] == 1
    with pytest.raises(FileNotFoundError):
        views.explanation_fields(sae_dir / "missing.db", 0)
