"""Read-only answers about explanations for pages and the API (plain JSON-able data; one DB open per call).

- `explanation_fields(db, latent)`: what a latent's dashboard JSON adds — `explanation_source`
  ('human' | 'auto' | None), `explanation_explainer`, and `explanation_scores` of the shown explanation
  ({scorer: {metric: value, metric + "_n": n}}).
- `latent_explanations(db, latent)`: every stored explanation of a latent with its scores.
- `ranked(db, …)`: latents sorted by one score, with their shown explanation (sortable lists).
- `explain_summary(db)`: per explainer, how many latents it explained and its mean scores.
All raise `IndexMissing` when there is no index at the path.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from app.explain import store
from app.index.service import IndexMissing


def _open(db_path: str | os.PathLike) -> sqlite3.Connection:
    path = Path(db_path)
    if not path.is_file():
        raise IndexMissing(f"no latent index at {path}: run `jumpscope index` first")
    return store.open_db(path, readonly=True)


def _scores(rows: list[store.Score]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for s in rows:
        out.setdefault(s.scorer, {})[s.metric] = s.value
        out[s.scorer][f"{s.metric}_n"] = s.n
    return out


def explanation_fields(db_path: str | os.PathLike, latent: int) -> dict[str, Any]:
    """{explanation_source, explanation_explainer, explanation_scores} of the shown explanation of `latent`."""
    with closing(_open(db_path)) as conn:
        shown = store.get_explanation(conn, int(latent))
        scores = store.get_scores(conn, int(latent), shown.explainer) if shown else []
    return {"explanation_source": shown.source if shown else None,
            "explanation_explainer": shown.explainer if shown else None,
            "explanation_scores": _scores(scores)}


def latent_explanations(db_path: str | os.PathLike, latent: int) -> list[dict[str, Any]]:
    """Every stored explanation of `latent` (shown one first) with its scores."""
    with closing(_open(db_path)) as conn:
        shown = store.get_explanation(conn, int(latent))
        rows = store.list_explanations(conn, int(latent))
        scores = store.get_scores(conn, int(latent))
    out = []
    for e in sorted(rows, key=lambda e: (shown is None or e.explainer != shown.explainer, e.explainer)):
        out.append({**e.to_json(), "shown": shown is not None and e.explainer == shown.explainer,
                    "scores": _scores([s for s in scores if s.explainer == e.explainer])})
    return out


def ranked(db_path: str | os.PathLike, explainer: str = "builtin", scorer: str = "builtin", metric: str = "f1",
           descending: bool = True, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
    """Latents sorted by one score: [{latent, value, text (that explainer's), shown (the shown text)}]."""
    with closing(_open(db_path)) as conn:
        order = store.ranked_latents(conn, explainer, scorer, metric, descending, min(int(limit), 1000), offset)
        out = []
        for latent, value in order:
            mine, shown = store.get_explanation(conn, latent, explainer), store.get_explanation(conn, latent)
            out.append({"latent": latent, "value": value, "text": mine.text if mine else None,
                        "shown": shown.text if shown else None})
    return out


def explain_summary(db_path: str | os.PathLike) -> dict[str, Any]:
    """{explainer: {latents, scores: {scorer: {metric: mean}}}} over the whole index."""
    with closing(_open(db_path)) as conn:
        counts = store.explainers(conn)
        means: dict[str, dict[str, dict[str, float]]] = {}
        try:
            rows = conn.execute("SELECT explainer, scorer, metric, AVG(value) FROM explanation_scores "
                                "WHERE value IS NOT NULL GROUP BY explainer, scorer, metric").fetchall()
        except sqlite3.OperationalError:  # an index without the explanation tables yet
            rows = []
    for explainer, scorer, metric, mean in rows:
        means.setdefault(explainer, {}).setdefault(scorer, {})[metric] = float(mean)
    return {name: {"latents": n, "scores": means.get(name, {})} for name, n in counts.items()}
