"""The index database: SQLite (stdlib) in WAL mode, versioned schema, compact numpy blobs, no pickle.

Tables
  meta(key, value)            JSON values: schema_version, status, config, sae, progress, eval metrics …
  state(name, part, dtype, shape, data)   the running IndexState (for resume / extension), in latent chunks
  latents(latent, …)          final per-latent statistics, logit effects and neighbours (blobs)
  examples(latent, kind, …)   'top' / 'interval' example windows: token ids, values, loss effects (blobs);
                              'near' (near misses): per-token pre-activations in `vals`, centre pre in `maxes`
  corpus_rows(row, token_ids) the rows holding top examples, kept when loss effects are computed lazily
                              (meta loss_effects: 'eager' | 'lazy' | 'off'; app/index/lazy_loss.py)
  theta_window(latent, counts) the histogram of pre-activations around θ (edges: theta_window.theta_edges)
  tokens(id, text)            the vocabulary as shown per token, so readers need no tokenizer
  explanations(latent, text) + explanations_fts (FTS5, kept in sync by triggers)
Arrays are stored with fixed dtypes via `ndarray.tobytes()` and read back with `np.frombuffer`.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.index.state import IndexState

SCHEMA_VERSION = 2  # v2: the θ window (pre_hist, near misses) in the state, theta_window table, 'near' examples
STATE_PART = 8192  # latents per stored state blob (keeps each blob far below SQLite's 1 GB limit)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state (
    name TEXT NOT NULL, part INTEGER NOT NULL, dtype TEXT NOT NULL, shape TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (name, part));
CREATE TABLE IF NOT EXISTS latents (
    latent INTEGER PRIMARY KEY, count INTEGER NOT NULL, total REAL NOT NULL, max REAL NOT NULL,
    threshold REAL NOT NULL, top_token_id INTEGER, hist BLOB NOT NULL, interval_edges BLOB NOT NULL,
    logit_top_ids BLOB, logit_top_vals BLOB, logit_bot_ids BLOB, logit_bot_vals BLOB,
    neighbor_ids BLOB, neighbor_cos BLOB);
CREATE INDEX IF NOT EXISTS latents_top_token ON latents (top_token_id);
CREATE TABLE IF NOT EXISTS examples (
    latent INTEGER NOT NULL, kind TEXT NOT NULL, n INTEGER NOT NULL, width INTEGER NOT NULL,
    token_ids BLOB NOT NULL, vals BLOB NOT NULL, loss BLOB, centers BLOB NOT NULL, maxes BLOB NOT NULL,
    groups BLOB NOT NULL, positions BLOB NOT NULL, PRIMARY KEY (latent, kind));
CREATE TABLE IF NOT EXISTS corpus_rows (row INTEGER PRIMARY KEY, token_ids BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS theta_window (latent INTEGER PRIMARY KEY, counts BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (id INTEGER PRIMARY KEY, text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS explanations (latent INTEGER PRIMARY KEY, text TEXT NOT NULL, updated REAL);
CREATE VIRTUAL TABLE IF NOT EXISTS explanations_fts USING fts5(
    text, content='explanations', content_rowid='latent');
CREATE TRIGGER IF NOT EXISTS explanations_ai AFTER INSERT ON explanations BEGIN
    INSERT INTO explanations_fts(rowid, text) VALUES (new.latent, new.text); END;
CREATE TRIGGER IF NOT EXISTS explanations_ad AFTER DELETE ON explanations BEGIN
    INSERT INTO explanations_fts(explanations_fts, rowid, text) VALUES ('delete', old.latent, old.text); END;
CREATE TRIGGER IF NOT EXISTS explanations_au AFTER UPDATE ON explanations BEGIN
    INSERT INTO explanations_fts(explanations_fts, rowid, text) VALUES ('delete', old.latent, old.text);
    INSERT INTO explanations_fts(rowid, text) VALUES (new.latent, new.text); END;
"""


class IndexSchemaError(ValueError):
    """The database was written by an incompatible version of the index."""


def connect(path: str | os.PathLike, readonly: bool = False) -> sqlite3.Connection:
    """Open the index. Writers get WAL mode and the schema; readers open with mode=ro (never block writers)."""
    path = Path(path)
    if readonly:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=60)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        with conn:
            conn.executescript(_SCHEMA)
        version = get_meta(conn, "schema_version")
        if version is None:
            with conn:
                set_meta(conn, "schema_version", SCHEMA_VERSION)
        elif version != SCHEMA_VERSION:
            conn.close()
            raise IndexSchemaError(f"{path}: index schema v{version}, this build reads v{SCHEMA_VERSION}; "
                                   "rebuild it with `jumpscope index --restart`")
    return conn


# --- blobs and meta --------------------------------------------------------------------------------------
def to_blob(array: Any, dtype: str) -> bytes:
    """Fixed-dtype little-endian bytes of an array or tensor."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    return np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()


def from_blob(blob: bytes | None, dtype: str, shape: tuple[int, ...] | None = None) -> np.ndarray | None:
    """Inverse of to_blob (a read-only view; copy before writing to it)."""
    if blob is None:
        return None
    a = np.frombuffer(blob, dtype=np.dtype(dtype).newbyteorder("<"))
    return a.reshape(shape) if shape is not None else a


def get_meta(conn: sqlite3.Connection, key: str, default: Any = None) -> Any:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return default if row is None else json.loads(row[0])


def set_meta(conn: sqlite3.Connection, key: str, value: Any) -> None:
    """Upsert one JSON meta value (inside the caller's transaction)."""
    conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                 (key, json.dumps(value)))


def all_meta(conn: sqlite3.Connection) -> dict[str, Any]:
    return {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM meta")}


# --- running state -------------------------------------------------------------------------------------
_TORCH_TO_NP = {torch.int64: "int64", torch.float64: "float64", torch.float32: "float32"}


def save_state(conn: sqlite3.Connection, state: IndexState) -> None:
    """Store the running state (inside the caller's transaction, with the progress counters)."""
    conn.execute("DELETE FROM state")
    for name, t in state.tensors().items():
        dtype = _TORCH_TO_NP[t.dtype]
        for part, lo in enumerate(range(0, max(state.n, 1), STATE_PART)):
            chunk = t[lo:lo + STATE_PART]
            conn.execute("INSERT INTO state(name, part, dtype, shape, data) VALUES (?, ?, ?, ?, ?)",
                         (name, part, dtype, json.dumps(list(chunk.shape)), to_blob(chunk, dtype)))


def load_state(conn: sqlite3.Connection) -> IndexState | None:
    """The last committed running state, or None when the index has none yet."""
    parts: dict[str, list[np.ndarray]] = {}
    for name, _, dtype, shape, data in conn.execute(
            "SELECT name, part, dtype, shape, data FROM state ORDER BY name, part"):
        parts.setdefault(name, []).append(from_blob(data, dtype, tuple(json.loads(shape))))
    if not parts:
        return None
    return IndexState(**{k: torch.from_numpy(np.concatenate(v).copy()) for k, v in parts.items()})


def ensure_vocab(conn: sqlite3.Connection, strings: list[str]) -> None:
    """Fill the tokens table once (readers show token text without loading a tokenizer)."""
    (n,) = conn.execute("SELECT COUNT(*) FROM tokens").fetchone()
    if n != len(strings):
        conn.execute("DELETE FROM tokens")
        conn.executemany("INSERT INTO tokens(id, text) VALUES (?, ?)", enumerate(strings))


def token_texts(conn: sqlite3.Connection, ids: list[int]) -> dict[int, str]:
    """Text of each token id (ids missing from the vocabulary map to '<id>')."""
    uniq = sorted(set(int(i) for i in ids))
    out: dict[int, str] = {}
    for lo in range(0, len(uniq), 900):  # stay below SQLite's bound-parameter limit
        chunk = uniq[lo:lo + 900]
        q = f"SELECT id, text FROM tokens WHERE id IN ({','.join('?' * len(chunk))})"
        out.update(conn.execute(q, chunk).fetchall())
    return {i: out.get(i, f"<{i}>") for i in uniq}
