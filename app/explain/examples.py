"""Read every latent's `LatentExamples` (and the pooled windows background) from an index.db.

One reader serves a whole run: it opens the database read-only once, loads the vocabulary once (as an array,
so each window's token texts are one lookup of its ids) and reads the stored example windows of many latents per
query (`CHUNK`). Its windows are the ones the index's own decoder gives (`app.index.service.decode_examples`,
`near_misses`): same tokens, ids and values.
"""

from __future__ import annotations

import os
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import closing
from itertools import compress
from pathlib import Path
from typing import Any

import numpy as np

from app.explain.base import LatentExamples, Window
from app.index.service import IndexMissing
from app.index.store import connect, from_blob, get_meta

HOLDOUT_EVERY = 3  # every third top / interval window (ranks 1, 4, 7, …) is held out for scoring
CHUNK = 256  # latents whose rows one query reads


class _Vocab(dict):
    """Token id → text, '<id>' for ids the tokens table lacks."""

    def __missing__(self, key: int) -> str:
        return f"<{key}>"


def split_holdout(items: list, every: int = HOLDOUT_EVERY) -> tuple[list, list]:
    """(shown, held out): item i is held out when i % every == 1 (the first item is always shown)."""
    if every < 2:
        raise ValueError(f"holdout_every must be >= 2 (1 would hold out nothing), got {every}")
    shown = [x for i, x in enumerate(items) if i % every != 1]
    held = [x for i, x in enumerate(items) if i % every == 1]
    return shown, held


class _TokenTexts:
    """Token id → text as a numpy object array: a window's texts are one fancy index, each id decoded once."""

    def __init__(self, vocab: _Vocab) -> None:
        self.vocab = vocab
        self.table = np.empty(0, dtype=object)
        self._grow(max(vocab, default=-1) + 1)

    def _grow(self, size: int) -> None:
        old = self.table.size
        table = np.empty(size, dtype=object)
        table[:old] = self.table
        table[old:] = [self.vocab[i] for i in range(old, size)]
        self.table = table

    def lookup(self, ids: np.ndarray) -> list:
        """The texts of `ids` (any shape of non-negative ids) as nested lists."""
        if ids.size and int(ids.max()) >= self.table.size:
            self._grow(int(ids.max()) + 1)
        return self.table[ids].tolist()


def _decode(row: tuple[Any, ...], texts: _TokenTexts, threshold: float | None = None) -> list[Window]:
    """The windows of one examples row (kind, n, width, token_ids, vals, centers), padding (id < 0) dropped.

    With `threshold` (near misses) a token's value is its pre-activation where that exceeds θ, else 0.
    """
    kind, n, width, tok_b, val_b, cen_b = row
    tok = from_blob(tok_b, "int32", (n, width))
    vals = from_blob(val_b, "float32", (n, width)).astype(np.float64)  # exact, as float(np.float32) is
    if threshold is not None:
        vals = np.where(vals > threshold, vals, 0.0)
    centers = from_blob(cen_b, "int32").tolist()
    keep = tok >= 0
    texts_all, ids_all, vals_all = texts.lookup(np.where(keep, tok, 0)), tok.tolist(), vals.tolist()
    out = []
    for e, (k, c) in enumerate(zip(keep.tolist(), centers, strict=True)):
        t, i, v = texts_all[e], ids_all[e], vals_all[e]
        if not all(k):
            t, i, v = list(compress(t, k)), list(compress(i, k)), list(compress(v, k))
        out.append(Window(tuple(t), tuple(i), tuple(v), int(c), kind))
    return out


class ExampleSource:
    """The example windows of an index (read-only; use as a context manager or call close())."""

    def __init__(self, db_path: str | os.PathLike, holdout_every: int = HOLDOUT_EVERY) -> None:
        path = Path(db_path)
        if not path.is_file():
            raise IndexMissing(f"no latent index at {path}: run `jumpscope index` first")
        self.path = path
        self.holdout_every = int(holdout_every)
        split_holdout([], self.holdout_every)  # validates
        self.conn: sqlite3.Connection = connect(path, readonly=True)
        d = get_meta(self.conn, "d_sae")
        (n_final,) = self.conn.execute("SELECT COUNT(*) FROM latents").fetchone()
        if d is None or n_final == 0:
            status = get_meta(self.conn, "status")
            self.conn.close()
            raise IndexMissing(f"{path}: the index is not finalised yet (status: {status}); finish `jumpscope index`")
        self.d_sae = int(d)
        self.tokens_seen = int(get_meta(self.conn, "tokens_seen", 0))
        self.vocab = _Vocab(self.conn.execute("SELECT id, text FROM tokens"))
        self._texts = _TokenTexts(self.vocab)

    def __enter__(self) -> ExampleSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    def get(self, latent: int) -> LatentExamples:
        """The examples of one latent (ValueError when out of range)."""
        if not 0 <= int(latent) < self.d_sae:
            raise ValueError(f"latent {latent} is out of range: this SAE has latents 0..{self.d_sae - 1}")
        return next(self.iter([int(latent)]))

    def iter(self, latents: Iterable[int]) -> Iterator[LatentExamples]:
        """The examples of each latent, in the order given (rows read `CHUNK` latents per query)."""
        wanted = [int(i) for i in latents]
        for start in range(0, len(wanted), CHUNK):
            chunk = wanted[start:start + CHUNK]
            marks = ",".join("?" * len(set(chunk)))
            args = sorted(set(chunk))
            stats = {r[0]: r[1:] for r in self.conn.execute(
                "SELECT latent, count, max, threshold, logit_top_ids, logit_top_vals, logit_bot_ids, logit_bot_vals "
                f"FROM latents WHERE latent IN ({marks})", args)}
            rows: dict[int, dict[str, tuple]] = {}
            for r in self.conn.execute("SELECT latent, kind, n, width, token_ids, vals, centers FROM examples "
                                       f"WHERE latent IN ({marks})", args):
                rows.setdefault(r[0], {})[r[1]] = r[1:]
            for i in chunk:
                yield self._examples(i, stats.get(i), rows.get(i, {}))

    def _examples(self, i: int, stats: tuple | None, rows: dict[str, tuple]) -> LatentExamples:
        """One latent's examples from its latents row (None: not finalised) and its examples rows by kind."""
        if stats is None:
            return LatentExamples(i)
        count, mx, theta, tid, tval, bid, bval = stats
        top, held_top = split_holdout(_decode(rows["top"], self._texts) if "top" in rows else [], self.holdout_every)
        interval, held_int = split_holdout(_decode(rows["interval"], self._texts) if "interval" in rows else [],
                                           self.holdout_every)
        near = _decode(rows["near"], self._texts, float(theta)) if "near" in rows else []
        return LatentExamples(
            latent=i, top=tuple(top), interval=tuple(interval), held_out=tuple(held_top + held_int),
            near=tuple(near), top_logits=self._logits(tid, tval), bottom_logits=self._logits(bid, bval),
            density=count / self.tokens_seen if self.tokens_seen else 0.0, max_activation=float(mx),
            threshold=float(theta))

    def _logits(self, ids_b: bytes | None, vals_b: bytes | None) -> tuple[tuple[str, float], ...]:
        ids, vals = from_blob(ids_b, "int32"), from_blob(vals_b, "float32")
        if ids is None or vals is None:
            return ()
        return tuple((self.vocab[int(t)], float(v)) for t, v in zip(ids, vals, strict=True))

    def alive_latents(self) -> list[int]:
        """Latents with at least one stored example window (the others were never active)."""
        return [int(r[0]) for r in self.conn.execute(
            "SELECT DISTINCT latent FROM examples WHERE kind IN ('top', 'interval') ORDER BY latent")]

    def background(self) -> Counter[int]:
        """Token id counts over the windows of every latent: the corpus sample enrichment is measured against.

        Each stored window is counted once (top and interval windows of all latents, plus near misses); this is
        the only text an index keeps, and pooled over all latents it is close to the corpus's token mix.
        """
        total = np.zeros(0, dtype=np.int64)
        for n, width, blob in self.conn.execute("SELECT n, width, token_ids FROM examples"):
            ids = from_blob(blob, "int32", (n, width))
            c = np.bincount(ids[ids >= 0], minlength=total.size)
            if c.size > total.size:
                c[:total.size] += total
                total = c
            else:
                total += c
        return Counter({int(t): int(total[t]) for t in np.flatnonzero(total)})


def read_examples(db_path: str | os.PathLike, latent: int, holdout_every: int = HOLDOUT_EVERY) -> LatentExamples:
    """One latent's examples, opening and closing the index (convenience for pages and tests)."""
    with closing(ExampleSource(db_path, holdout_every)) as src:
        return src.get(latent)
