"""Explanations beside latent numbers (issue 17 point 3): the shown explanation of many latents in one query,
index densities for the dense-latent filter, and search results re-ranked by text match then score.

Everything reads the SAE's index.db read-only (app.explain.store / views own the tables); an SAE without an
index, or with an unreadable one, simply has no explanations ({}), never an error. Runs inside
`Services.run` like the other data functions.
"""

from __future__ import annotations

import logging
import sqlite3
from contextlib import closing
from typing import Any

from app.explain import store, views
from app.index.service import IndexMissing
from app.index.store import connect, get_meta
from app.web.services import SAEEntry

log = logging.getLogger(__name__)

SEARCH_SCORE = ("builtin", "f1")  # (scorer, metric) that orders search results with the same text match
MAX_DENSITY_DEFAULT: float | None = None  # the dense filter is off unless a page asks for it


def labels(entry: SAEEntry, latents: set[int] | list[int]) -> dict[int, str]:
    """The shown explanation of each of `latents` that has one ({} without an index or when it is unreadable)."""
    wanted = sorted({int(i) for i in latents})
    if not wanted or not entry.indexed:
        return {}
    out: dict[int, str] = {}
    try:
        with closing(connect(entry.index_db, readonly=True)) as conn:
            for lo in range(0, len(wanted), 900):
                chunk = wanted[lo:lo + 900]
                out.update({int(i): str(t) for i, t in conn.execute(
                    f"SELECT latent, text FROM explanations WHERE latent IN ({','.join('?' * len(chunk))})", chunk)})
    except sqlite3.DatabaseError as e:
        log.warning("no explanations for %s: %s", entry.id, e)
        return {}
    return out


def densities(entry: SAEEntry) -> dict[int, float] | None:
    """Each latent's density on the indexed tokens (count / tokens seen); the training density
    (sparsity.safetensors) when there is no index; None when neither is known."""
    if entry.indexed:
        try:
            with closing(connect(entry.index_db, readonly=True)) as conn:
                seen = int(get_meta(conn, "tokens_seen", 0) or 0)
                if seen > 0:
                    return {int(i): int(c) / seen for i, c in conn.execute("SELECT latent, count FROM latents")}
        except sqlite3.DatabaseError as e:
            log.warning("no index densities for %s: %s", entry.id, e)
    if entry.log10_density is not None:
        return {i: 10.0 ** float(v) for i, v in enumerate(entry.log10_density.tolist())}
    return None


def hide_dense(result: dict[str, Any], dens: dict[int, float] | None, max_density: float | None
               ) -> tuple[dict[str, Any], list[int]]:
    """An encode result without the latents whose density exceeds `max_density` (in the per-token lists and the
    prompt's top latents; `l0` keeps the true counts), and the sorted hidden latents."""
    if max_density is None or dens is None:
        return result, []
    dense = {i for i, d in dens.items() if d > max_density}
    seen = {x["latent"] for row in result["latents_per_token"] for x in row} | {
        t["latent"] for t in result["top_latents"]}
    hidden = sorted(seen & dense)
    if not hidden:
        return result, []
    out = dict(result)
    out["latents_per_token"] = [[x for x in row if x["latent"] not in dense] for row in result["latents_per_token"]]
    out["top_latents"] = [t for t in result["top_latents"] if t["latent"] not in dense]
    return out, hidden


def dashboard_fields(entry: SAEEntry, latent: int) -> dict[str, Any]:
    """`explanation_source`, `explanation_explainer` and `explanation_scores` for the dashboard (None / {} when
    the SAE has no readable index)."""
    empty = {"explanation_source": None, "explanation_explainer": None, "explanation_scores": {}}
    if not entry.indexed:
        return empty
    try:
        return views.explanation_fields(entry.index_db, latent)
    except (IndexMissing, sqlite3.DatabaseError) as e:
        log.warning("no explanation fields for %s: %s", entry.id, e)
        return empty


def _match_rank(query: str, r: dict[str, Any]) -> int:
    """0: the latent's number; 1: the explanation is exactly the query; 2: it contains it; 3: any other hit."""
    q = query.strip().lstrip("#").casefold()
    text = (r.get("explanation") or "").strip().casefold()
    if q.isdigit() and int(q) == r["latent"]:
        return 0
    if text and text == query.strip().casefold():
        return 1
    if text and query.strip().casefold() in text:
        return 2
    return 3


def rank_search(entry: SAEEntry, query: str, results: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """Search results ordered by text match (number, exact explanation, substring, other), then by the shown
    explanation's score (`SEARCH_SCORE`, highest first, unscored last), then as the index returned them. Each
    result gains `explanation_source` and `score`."""
    scorer, metric = SEARCH_SCORE
    extra: dict[int, tuple[str | None, float | None]] = {}
    if entry.indexed and results:
        try:
            with closing(store.open_db(entry.index_db, readonly=True)) as conn:
                for r in results:
                    shown = store.get_explanation(conn, r["latent"])
                    value = None
                    if shown is not None:
                        for s in store.get_scores(conn, r["latent"], shown.explainer):
                            if s.scorer == scorer and s.metric == metric:
                                value = s.value
                    extra[r["latent"]] = (shown.source if shown else None, value)
        except (FileNotFoundError, sqlite3.DatabaseError) as e:
            log.warning("no explanation scores for %s: %s", entry.id, e)
    out = [{**r, "explanation_source": extra.get(r["latent"], (None, None))[0],
            "score": extra.get(r["latent"], (None, None))[1]} for r in results]
    order = sorted(range(len(out)), key=lambda k: (_match_rank(query, out[k]), out[k]["score"] is None,
                                                   -(out[k]["score"] or 0.0), k))
    return [out[k] for k in order][:limit]


def annotate_encoding(entry: SAEEntry, result: dict[str, Any], max_density: float | None
                      ) -> tuple[dict[str, Any], list[int], dict[int, str]]:
    """An encode result for display: dense latents hidden (`hide_dense`, with the hidden list) and the shown
    explanation of every latent still in it."""
    dens = densities(entry) if max_density is not None else None
    shown, hidden = hide_dense(result, dens, max_density)
    wanted = {x["latent"] for row in shown["latents_per_token"] for x in row} | {
        t["latent"] for t in shown["top_latents"]}
    return shown, hidden, labels(entry, wanted)


def labels_by_sae(entries: dict[str, SAEEntry], wanted: dict[str, set[int]]) -> dict[str, dict[int, str]]:
    """`labels` for latents of several SAEs: {sae id: {latent: explanation}}."""
    return {sid: labels(entries[sid], latents) for sid, latents in wanted.items() if sid in entries}
