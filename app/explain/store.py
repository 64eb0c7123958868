"""Latent explanations and their scores, stored in the SAE's index.db (next to the dashboards they describe).

Tables (created and migrated by `ensure_schema`, on every writer connection)
  latent_explanations(latent, explainer, text, prompt_version, created, source)   PRIMARY KEY (latent, explainer)
      one explanation per latent *per explainer*: 'builtin', 'openai:<model>', 'hf:<model>' … (source 'auto'),
      or 'human' (source 'human'), the text an admin wrote on the dashboard. Auto explanations never touch
      the human row.
  explanation_scores(latent, explainer, scorer, metric, value, n, created)
      PRIMARY KEY (latent, explainer, scorer, metric)
      how well one explanation predicts the latent on held-out examples: e.g. scorer 'builtin', metrics
      'precision' / 'recall' / 'f1'; scorer 'detection' metric 'accuracy' … `n` is what the value was measured on.
  explanations(latent, text, updated) + explanations_fts   (the index's own table, unchanged)
      the *shown* explanation of each latent — what dashboards, search (FTS5) and attribution read. It is
      derived here: the human text when there is one, else the most recently created auto explanation.

Migration: an index written before this module has hand-written texts in `explanations` only; the first
writer connection copies them into `latent_explanations` as explainer 'human', source 'human'
(meta `explain_schema` records that it ran). Read functions also work on an unmigrated read-only database
(its `explanations` rows read as human ones).

All functions take an open sqlite3 connection (`open_db`); writers run inside their own transaction.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from app.index.store import connect, get_meta, set_meta

EXPLAIN_SCHEMA = 1
HUMAN = "human"  # the explainer name (and source) of hand-written explanations
SOURCES = ("auto", "human")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS latent_explanations (
    latent INTEGER NOT NULL, explainer TEXT NOT NULL, text TEXT NOT NULL, prompt_version TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL, source TEXT NOT NULL CHECK (source IN ('auto', 'human')),
    PRIMARY KEY (latent, explainer));
CREATE TABLE IF NOT EXISTS explanation_scores (
    latent INTEGER NOT NULL, explainer TEXT NOT NULL, scorer TEXT NOT NULL, metric TEXT NOT NULL,
    value REAL, n INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL,
    PRIMARY KEY (latent, explainer, scorer, metric));
CREATE INDEX IF NOT EXISTS explanation_scores_metric ON explanation_scores (explainer, scorer, metric, value);
"""


@dataclass(frozen=True)
class Explanation:
    """One stored explanation of a latent."""

    latent: int
    text: str
    explainer: str
    prompt_version: str = ""
    created: float = 0.0
    source: str = "auto"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Score:
    """One metric of one explanation (e.g. scorer 'builtin', metric 'precision', value 0.9 over n=120 tokens)."""

    latent: int
    explainer: str
    scorer: str
    metric: str
    value: float | None
    n: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --- connections and schema ------------------------------------------------------------------------------
def open_db(db_path: str | os.PathLike, readonly: bool = False) -> sqlite3.Connection:
    """Open an index database for explanations (writers get the explanation tables, migrated)."""
    path = Path(db_path)
    if not path.is_file():
        raise FileNotFoundError(f"no latent index at {path}: run `jumpscope index` first")
    conn = connect(path, readonly=readonly)
    if not readonly:
        ensure_schema(conn)
    return conn


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the explanation tables and move legacy hand-written explanations in (once)."""
    with conn:
        conn.executescript(_SCHEMA)
        if get_meta(conn, "explain_schema") is None:
            conn.execute("INSERT OR IGNORE INTO latent_explanations(latent, explainer, text, prompt_version, created,"
                         " source) SELECT latent, ?, text, '', COALESCE(updated, 0), 'human' FROM explanations",
                         (HUMAN,))
            set_meta(conn, "explain_schema", EXPLAIN_SCHEMA)


def _has_tables(conn: sqlite3.Connection) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'latent_explanations'").fetchone()
    return row is not None


def _row(r: tuple) -> Explanation:
    return Explanation(int(r[0]), r[1], r[2], r[3] or "", float(r[4] or 0.0), r[5])


_COLS = "latent, text, explainer, prompt_version, created, source"


# --- explanations ----------------------------------------------------------------------------------------
def put_explanation(conn: sqlite3.Connection, latent: int, text: str, explainer: str, prompt_version: str = "",
                    source: str = "auto", created: float | None = None) -> None:
    """Store (replace) `explainer`'s explanation of `latent` and refresh the shown one.

    Auto explanations (`source='auto'`) may not use the explainer name 'human'; the human row is only ever
    written with `source='human'` (the dashboard form), so auto runs never overwrite hand-written text.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if (explainer == HUMAN) != (source == HUMAN):
        raise ValueError("the explainer name 'human' is reserved for hand-written explanations (source 'human')")
    text = text.strip()
    if not text:
        raise ValueError("an explanation needs some text (use delete_explanation to remove one)")
    with conn:
        conn.execute("INSERT INTO latent_explanations(latent, explainer, text, prompt_version, created, source) "
                     "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(latent, explainer) DO UPDATE SET text = excluded.text, "
                     "prompt_version = excluded.prompt_version, created = excluded.created, source = excluded.source",
                     (int(latent), explainer, text, prompt_version, time.time() if created is None else created,
                      source))
        _refresh_shown(conn, int(latent))


def put_batch(conn: sqlite3.Connection, explanations: Iterable[Explanation], scores: Iterable[Score] = ()) -> None:
    """Store many auto explanations and scores in one transaction (a run's batch; same rules as the single puts)."""
    now = time.time()
    with conn:
        for e in explanations:
            if e.explainer == HUMAN or e.source != "auto" or not e.text.strip():
                raise ValueError(f"latent {e.latent}: a batch holds auto explanations with text only")
            conn.execute("INSERT INTO latent_explanations(latent, explainer, text, prompt_version, created, source) "
                         "VALUES (?, ?, ?, ?, ?, 'auto') ON CONFLICT(latent, explainer) DO UPDATE SET "
                         "text = excluded.text, prompt_version = excluded.prompt_version, created = excluded.created, "
                         "source = excluded.source",
                         (int(e.latent), e.explainer, e.text.strip(), e.prompt_version, e.created or now))
            _refresh_shown(conn, int(e.latent))
        _upsert_scores(conn, scores, now)


def delete_explanation(conn: sqlite3.Connection, latent: int, explainer: str) -> None:
    """Remove `explainer`'s explanation of `latent` (and its scores); the shown one falls back to the others."""
    with conn:
        conn.execute("DELETE FROM latent_explanations WHERE latent = ? AND explainer = ?", (int(latent), explainer))
        conn.execute("DELETE FROM explanation_scores WHERE latent = ? AND explainer = ?", (int(latent), explainer))
        _refresh_shown(conn, int(latent))


def _refresh_shown(conn: sqlite3.Connection, latent: int) -> None:
    """Make `explanations` (what pages and search read) hold the human text, else the newest auto one."""
    best = conn.execute("SELECT text, created FROM latent_explanations WHERE latent = ? "
                        "ORDER BY source = 'human' DESC, created DESC, explainer LIMIT 1", (latent,)).fetchone()
    if best is None:
        conn.execute("DELETE FROM explanations WHERE latent = ?", (latent,))
        return
    old = conn.execute("SELECT text FROM explanations WHERE latent = ?", (latent,)).fetchone()
    if old is None or old[0] != best[0]:
        conn.execute("INSERT INTO explanations(latent, text, updated) VALUES (?, ?, ?) ON CONFLICT(latent) "
                     "DO UPDATE SET text = excluded.text, updated = excluded.updated", (latent, best[0], best[1]))


def get_explanation(conn: sqlite3.Connection, latent: int, explainer: str | None = None) -> Explanation | None:
    """`explainer`'s explanation of `latent`; with explainer None, the shown one (human first, else newest)."""
    if not _has_tables(conn):  # an unmigrated database opened read-only: its texts are hand-written
        if explainer not in (None, HUMAN):
            return None
        r = conn.execute("SELECT latent, text, updated FROM explanations WHERE latent = ?", (int(latent),)).fetchone()
        return Explanation(int(r[0]), r[1], HUMAN, "", float(r[2] or 0.0), HUMAN) if r else None
    if explainer is None:
        r = conn.execute(f"SELECT {_COLS} FROM latent_explanations WHERE latent = ? "
                         "ORDER BY source = 'human' DESC, created DESC, explainer LIMIT 1", (int(latent),)).fetchone()
    else:
        r = conn.execute(f"SELECT {_COLS} FROM latent_explanations WHERE latent = ? AND explainer = ?",
                         (int(latent), explainer)).fetchone()
    return _row(r) if r else None


def list_explanations(conn: sqlite3.Connection, latent: int | None = None, explainer: str | None = None
                      ) -> list[Explanation]:
    """Stored explanations, optionally of one latent and/or one explainer, ordered by latent then explainer."""
    if not _has_tables(conn):
        rows = conn.execute("SELECT latent, text, updated FROM explanations ORDER BY latent").fetchall()
        out = [Explanation(int(r[0]), r[1], HUMAN, "", float(r[2] or 0.0), HUMAN) for r in rows]
        return [e for e in out if (latent is None or e.latent == latent) and explainer in (None, HUMAN)]
    where, args = [], []
    if latent is not None:
        where.append("latent = ?")
        args.append(int(latent))
    if explainer is not None:
        where.append("explainer = ?")
        args.append(explainer)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    return [_row(r) for r in conn.execute(
        f"SELECT {_COLS} FROM latent_explanations {clause} ORDER BY latent, explainer", args)]


def done_latents(conn: sqlite3.Connection, explainer: str, prompt_version: str | None = None) -> set[int]:
    """Latents explained by `explainer` (with `prompt_version`, when given): a rerun skips them."""
    if not _has_tables(conn):
        return set()
    q, args = "SELECT latent FROM latent_explanations WHERE explainer = ?", [explainer]
    if prompt_version is not None:
        q += " AND prompt_version = ?"
        args.append(prompt_version)
    return {int(r[0]) for r in conn.execute(q, args)}


def explainers(conn: sqlite3.Connection) -> dict[str, int]:
    """Every explainer with stored explanations and how many latents it explained."""
    if not _has_tables(conn):
        (n,) = conn.execute("SELECT COUNT(*) FROM explanations").fetchone()
        return {HUMAN: int(n)} if n else {}
    return {r[0]: int(r[1]) for r in conn.execute(
        "SELECT explainer, COUNT(*) FROM latent_explanations GROUP BY explainer ORDER BY explainer")}


# --- scores ----------------------------------------------------------------------------------------------
def put_scores(conn: sqlite3.Connection, scores: Iterable[Score]) -> None:
    """Store (replace) scores, in one transaction."""
    with conn:
        _upsert_scores(conn, scores, time.time())


def _upsert_scores(conn: sqlite3.Connection, scores: Iterable[Score], now: float) -> None:
    """Insert or replace scores inside the caller's transaction (one statement for every writer)."""
    conn.executemany(
        "INSERT INTO explanation_scores(latent, explainer, scorer, metric, value, n, created) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(latent, explainer, scorer, metric) DO UPDATE SET "
        "value = excluded.value, n = excluded.n, created = excluded.created",
        [(int(x.latent), x.explainer, x.scorer, x.metric, None if x.value is None else float(x.value), int(x.n),
          now) for x in scores])


def get_scores(conn: sqlite3.Connection, latent: int, explainer: str | None = None) -> list[Score]:
    """Scores of `latent`'s explanations (of one explainer when given)."""
    if not _has_tables(conn):
        return []
    q = "SELECT latent, explainer, scorer, metric, value, n FROM explanation_scores WHERE latent = ?"
    args: list[Any] = [int(latent)]
    if explainer is not None:
        q += " AND explainer = ?"
        args.append(explainer)
    return [Score(int(r[0]), r[1], r[2], r[3], r[4], int(r[5]))
            for r in conn.execute(q + " ORDER BY explainer, scorer, metric", args)]


def scored_latents(conn: sqlite3.Connection, explainer: str | None, scorer: str, metric: str) -> set[int]:
    """Latents that have `metric` from `scorer` (for `explainer`, or any when None): a rerun skips them."""
    if not _has_tables(conn):
        return set()
    q, args = "SELECT latent FROM explanation_scores WHERE scorer = ? AND metric = ?", [scorer, metric]
    if explainer is not None:
        q += " AND explainer = ?"
        args.append(explainer)
    return {int(r[0]) for r in conn.execute(q, args)}


def ranked_latents(conn: sqlite3.Connection, explainer: str, scorer: str, metric: str, descending: bool = True,
                   limit: int = 100, offset: int = 0) -> list[tuple[int, float]]:
    """(latent, value) sorted by one score (NULL values last): "best / worst explained latents" lists."""
    if not _has_tables(conn):
        return []
    order = "DESC" if descending else "ASC"
    rows = conn.execute(
        f"SELECT latent, value FROM explanation_scores WHERE explainer = ? AND scorer = ? AND metric = ? "
        f"ORDER BY value IS NULL, value {order}, latent LIMIT ? OFFSET ?",
        (explainer, scorer, metric, max(1, int(limit)), max(0, int(offset)))).fetchall()
    return [(int(r[0]), r[1]) for r in rows]


def human_explanation_latents(conn: sqlite3.Connection) -> set[int]:
    """Latents with a hand-written explanation."""
    return {e.latent for e in list_explanations(conn, explainer=HUMAN)}


__all__ = ["EXPLAIN_SCHEMA", "HUMAN", "Explanation", "Score", "delete_explanation", "done_latents", "ensure_schema",
           "explainers", "get_explanation", "get_scores", "human_explanation_latents", "list_explanations", "open_db",
           "put_batch", "put_explanation", "put_scores", "ranked_latents", "scored_latents"]
