"""Read side of the index for the web app and CLI: dashboards, search, explanations, summary (plain data).

Readers open the database read-only (mode=ro); WAL lets them read while `jumpscope index` writes, and an
extension in progress keeps serving the previous final tables until it replaces them.
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.index.config import IndexConfig
from app.index.state import hist_edges
from app.index.store import all_meta, connect, from_blob, get_meta, token_texts
from app.index.theta_window import theta_edges


class IndexMissing(FileNotFoundError):
    """No index database at the path (or it has not been finalised yet)."""


class LatentNotFound(KeyError):
    """The latent number is out of range for this SAE."""


def open_index(db_path: str | os.PathLike, readonly: bool = True) -> sqlite3.Connection:
    """A connection to the index at `db_path`; IndexMissing when there is none or it is not an index."""
    path = Path(db_path)
    if not path.is_file():
        raise IndexMissing(f"no latent index at {path}: run `jumpscope index` first")
    try:
        return connect(path, readonly=readonly)
    except sqlite3.DatabaseError as e:
        raise IndexMissing(f"{path} is not a readable latent index ({e})") from None


def _d_sae(conn: sqlite3.Connection, path: Any) -> int:
    d = get_meta(conn, "d_sae")
    if d is None:
        raise IndexMissing(f"{path} holds no index yet")
    return int(d)


def check_latent(conn: sqlite3.Connection, path: Any, latent: Any) -> int:
    """`latent` as an int; LatentNotFound when it is not a number or out of the SAE's range."""
    d = _d_sae(conn, path)
    try:
        i = int(latent)
    except (TypeError, ValueError):
        raise LatentNotFound(f"latent {latent!r} is not a number") from None
    if not 0 <= i < d:
        raise LatentNotFound(f"latent {i} is out of range: this SAE has latents 0..{d - 1}")
    return i


def decode_examples(row: tuple, texts: dict[int, str]) -> list[dict[str, Any]]:
    """The windows of one `examples` table row (SELECT *) as dicts; `texts` maps every token id to its text."""
    _, kind, n, width, tok_b, val_b, loss_b, cen_b, max_b, grp_b, _ = row
    tok = from_blob(tok_b, "int32", (n, width))
    vals = from_blob(val_b, "float32", (n, width))
    loss = from_blob(loss_b, "float32", (n, width))
    centers, maxes = from_blob(cen_b, "int32"), from_blob(max_b, "float32")
    out = []
    for e in range(n):
        keep = tok[e] >= 0
        ids = [int(t) for t in tok[e][keep]]
        le = None
        if loss is not None and np.isfinite(loss[e][keep]).all() and keep.any():
            le = [float(x) for x in loss[e][keep]]
        out.append({"tokens": [texts[i] for i in ids], "token_ids": ids, "values": [float(v) for v in vals[e][keep]],
                    "center": int(centers[e]), "max": float(maxes[e]), "loss_effect": le})
    return out


def loss_effect_status(conn: sqlite3.Connection, latent: int) -> str:
    """'computed', 'pending' (lazy, not yet computed) or 'off' for one latent's top examples."""
    mode = get_meta(conn, "loss_effects")
    row = conn.execute("SELECT loss FROM examples WHERE latent = ? AND kind = 'top'", (latent,)).fetchone()
    if row is not None and row[0] is not None:
        return "computed"
    return "pending" if mode == "lazy" and row is not None else "off"


def latent_dashboard(db_path: str | os.PathLike, latent: int) -> dict[str, Any]:
    """Everything one latent's dashboard shows, as JSON-able data (shape agreed in the team contract)."""
    with closing(open_index(db_path)) as conn:
        i = check_latent(conn, db_path, latent)
        row = conn.execute("SELECT * FROM latents WHERE latent = ?", (i,)).fetchone()
        if row is None:
            status = get_meta(conn, "status")
            raise IndexMissing(f"{db_path}: the index is not finalised yet (status: {status})")
        meta = all_meta(conn)
        (_, count, total, mx, threshold, _, hist_b, edges_b, tid_b, tval_b, bid_b, bval_b, nid_b, ncos_b) = row
        ex_rows = {r[1]: r for r in conn.execute("SELECT * FROM examples WHERE latent = ?", (i,))}
        tids, bids = from_blob(tid_b, "int32"), from_blob(bid_b, "int32")
        ids = [int(t) for t in tids] + [int(t) for t in bids]
        for r in ex_rows.values():
            ids += [int(t) for t in from_blob(r[4], "int32") if t >= 0]
        texts = token_texts(conn, ids)
        expl = conn.execute("SELECT text FROM explanations WHERE latent = ?", (i,)).fetchone()
        window = _theta_window_counts(conn, i)
        loss_status = loss_effect_status(conn, i)
    cfg = IndexConfig.from_json(meta.get("config", {}))
    seen = int(meta.get("tokens_seen", 0))
    counts = from_blob(hist_b, "int64")
    edges = hist_edges(cfg).tolist()
    nz = np.flatnonzero(counts)
    histogram = ({"edges": edges[nz[0]:nz[-1] + 2], "counts": [int(c) for c in counts[nz[0]:nz[-1] + 1]]}
                 if nz.size else {"edges": [], "counts": []})
    iedges = from_blob(edges_b, "float64")
    intervals = [{"lo": float(iedges[j]), "hi": float(iedges[j + 1]), "examples": []}
                 for j in range(len(iedges) - 1)]
    if "interval" in ex_rows:
        groups = from_blob(ex_rows["interval"][9], "int32")
        for g, e in zip(groups, decode_examples(ex_rows["interval"], texts), strict=True):
            intervals[int(g)]["examples"].append(e)
    return {
        "latent": i,
        "threshold": float(threshold),
        "density": count / seen if seen else 0.0,
        "count": int(count),
        "tokens_seen": seen,
        "max": float(mx),
        "mean": float(total) / count if count else 0.0,
        "histogram": histogram,
        "top_examples": decode_examples(ex_rows["top"], texts) if "top" in ex_rows else [],
        "interval_examples": intervals,
        "top_logits": [{"token": texts[int(t)], "value": float(v)} for t, v in zip(tids, from_blob(tval_b, "float32"),
                                                                                strict=True)],
        "bottom_logits": [{"token": texts[int(t)], "value": float(v)}
                          for t, v in zip(bids, from_blob(bval_b, "float32"), strict=True)],
        "neighbors": [{"latent": int(n), "cosine": float(c)}
                      for n, c in zip(from_blob(nid_b, "int32"), from_blob(ncos_b, "float32"), strict=True)
                      if math.isfinite(float(c))],
        "explanation": expl[0] if expl else None,
        "loss_effects": loss_status,
        "pre_histogram": _pre_histogram(window, float(threshold), cfg),
        "near_misses": (near_misses(decode_examples(ex_rows["near"], texts), float(threshold))
                        if "near" in ex_rows else []),
    }


def _theta_window_counts(conn: sqlite3.Connection, latent: int) -> np.ndarray | None:
    """The latent's θ-window counts; None for an index written before they existed (schema v1)."""
    has = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'theta_window'").fetchone()
    if not has:
        return None
    row = conn.execute("SELECT counts FROM theta_window WHERE latent = ?", (latent,)).fetchone()
    return from_blob(row[0], "int64") if row else None


def _pre_histogram(counts: np.ndarray | None, threshold: float, cfg: IndexConfig) -> dict[str, Any] | None:
    """{edges, counts, threshold, window}: pre-activations in [(1 − w)·θ, (1 + w)·θ); None when not recorded
    (an index built before θ windows: rebuild it with `jumpscope index --restart`) or θ = 0."""
    if counts is None or threshold <= 0:
        return None
    edges = theta_edges(torch.tensor([threshold], dtype=torch.float32), cfg)[0].tolist()
    return {"edges": edges, "counts": [int(c) for c in counts], "threshold": threshold, "window": cfg.theta_window}


def near_misses(examples: list[dict[str, Any]], threshold: float) -> list[dict[str, Any]]:
    """Near-miss windows as shown: `pre` per token, `values` the activations (pre where pre > θ, else 0), and
    `max` the centre's pre-activation (<= θ)."""
    out = []
    for e in examples:
        pre = e["values"]
        out.append({"tokens": e["tokens"], "token_ids": e["token_ids"], "pre": pre,
                    "values": [p if p > threshold else 0.0 for p in pre], "center": e["center"], "max": e["max"]})
    return out


def _fts_query(text: str) -> str | None:
    """A safe FTS5 query: every word must match (as a prefix); user syntax is never interpreted."""
    words = re.findall(r"\w+", text)
    return " ".join(f'"{w}"*' for w in words) if words else None


def search_latents(db_path: str | os.PathLike, query: str, limit: int = 20) -> list[dict[str, Any]]:
    """Latents matching `query`: by number ("12" or "#12"), by explanation text (FTS5), by top token.

    An empty query lists latents by number. Results: {latent, max, density, top_token, explanation}.
    """
    limit = max(1, min(int(limit), 1000))
    q = (query or "").strip()
    with closing(open_index(db_path)) as conn:
        d = _d_sae(conn, db_path)
        seen = int(get_meta(conn, "tokens_seen", 0)) or 1
        hits: list[int] = []
        if not q:
            hits = [r[0] for r in conn.execute("SELECT latent FROM latents ORDER BY latent LIMIT ?", (limit,))]
        m = re.fullmatch(r"#?(\d+)", q)
        if m and int(m.group(1)) < d:
            hits.append(int(m.group(1)))
        fts = _fts_query(q)
        if fts:
            hits += [r[0] for r in conn.execute(
                "SELECT rowid FROM explanations_fts WHERE explanations_fts MATCH ? ORDER BY rank LIMIT ?",
                (fts, limit))]
        if q:
            ids = [r[0] for r in conn.execute("SELECT id FROM tokens WHERE lower(trim(text)) = lower(?)", (q,))]
            for lo in range(0, len(ids), 900):
                chunk = ids[lo:lo + 900]
                hits += [r[0] for r in conn.execute(
                    f"SELECT latent FROM latents WHERE top_token_id IN ({','.join('?' * len(chunk))}) "
                    "ORDER BY max DESC LIMIT ?", (*chunk, limit))]
        order = list(dict.fromkeys(hits))[:limit]
        out = []
        for i in order:
            r = conn.execute("SELECT l.max, l.count, l.top_token_id, e.text FROM latents l LEFT JOIN explanations e "
                             "ON e.latent = l.latent WHERE l.latent = ?", (i,)).fetchone()
            if r is None:
                continue
            tok = token_texts(conn, [r[2]])[r[2]] if r[2] is not None else None
            out.append({"latent": i, "max": float(r[0]), "density": r[1] / seen, "top_token": tok,
                        "explanation": r[3]})
    return out


def index_corpus(db_path: str | os.PathLike) -> str | None:
    """The corpus the index was built on (recorded from schema v2 on), or None."""
    with closing(open_index(db_path)) as conn:
        return get_meta(conn, "corpus")


def index_summary(db_path: str | os.PathLike) -> dict[str, Any]:
    """Tokens, d_sae, status, SAE metadata, model, index settings and eval metrics of an index."""
    with closing(open_index(db_path)) as conn:
        meta = all_meta(conn)
        d = _d_sae(conn, db_path)
        seen = int(meta.get("tokens_seen", 0))
        dead, dense, n = conn.execute(
            "SELECT COALESCE(SUM(count = 0), 0), COALESCE(SUM(count > 0.1 * ?), 0), COUNT(*) FROM latents",
            (seen,)).fetchone()
        (n_expl,) = conn.execute("SELECT COUNT(*) FROM explanations").fetchone()
    sae = meta.get("sae", {})
    return {
        "tokens": seen,
        "tokens_total": int(meta.get("tokens_total", 0)),
        "d_sae": d,
        "status": meta.get("status"),
        "hook_name": (sae.get("metadata") or {}).get("hook_name"),
        "sae": sae.get("metadata", {}),
        "sae_path": sae.get("path"),
        "model": meta.get("model"),
        "config": meta.get("config"),
        "metrics": meta.get("eval"),
        "dead_latents": int(dead) if n else None,
        "dense_latents": int(dense) if n else None,
        "explanations": int(n_expl),
        "schema_version": meta.get("schema_version"),
        "pass_seconds": meta.get("pass_seconds"),
        "finalized_at": meta.get("finalized_at"),
    }
