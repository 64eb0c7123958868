"""Read every latent's `LatentExamples` (and the pooled windows background) from an index.db.

One reader serves a whole run: it opens the database read-only once, loads the vocabulary once and decodes
the stored example windows with the index's own decoder (`app.index.service.decode_examples`).
"""

from __future__ import annotations

import os
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import closing
from pathlib import Path

import numpy as np

from app.explain.base import LatentExamples, Window
from app.index.service import IndexMissing, decode_examples, near_misses
from app.index.store import connect, from_blob, get_meta

HOLDOUT_EVERY = 3  # every third top / interval window (ranks 1, 4, 7, …) is held out for scoring


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


def _windows(rows: list[dict], kind: str) -> list[Window]:
    return [Window(tuple(e["tokens"]), tuple(e["token_ids"]), tuple(e["values"]), int(e["center"]), kind)
            for e in rows]


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
        """The examples of each latent, in the order given."""
        for i in latents:
            i = int(i)
            row = self.conn.execute("SELECT count, max, threshold, logit_top_ids, logit_top_vals, logit_bot_ids, "
                                    "logit_bot_vals FROM latents WHERE latent = ?", (i,)).fetchone()
            if row is None:
                yield LatentExamples(i)
                continue
            count, mx, theta, tid, tval, bid, bval = row
            ex = {r[1]: decode_examples(r, self.vocab)
                  for r in self.conn.execute("SELECT * FROM examples WHERE latent = ?", (i,))}
            top, held_top = split_holdout(_windows(ex.get("top", []), "top"), self.holdout_every)
            interval, held_int = split_holdout(_windows(ex.get("interval", []), "interval"), self.holdout_every)
            near = _windows(near_misses(ex.get("near", []), float(theta)), "near")
            yield LatentExamples(
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
