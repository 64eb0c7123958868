"""Loss effects computed on a latent's first dashboard view and cached in index.db (SPEC §4, issue 11).

A large index skips the loss-effect phase at finalise (meta `loss_effects` = 'lazy', see
finalize.loss_effect_mode) and keeps the corpus rows of the top examples (`corpus_rows`). The first view of a
latent runs `loss_effects` on that latent's top examples with the served LM and SAE and writes the blob into its
`examples` row in one transaction; later views read it. A per-(database, latent) lock keeps concurrent first
views from computing twice; the UPDATE only fills a NULL, so another process that got there first wins cleanly.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import numpy as np
import torch

from app.index.config import IndexConfig
from app.index.examples import TOP, ExampleSet
from app.index.loss_effects import loss_effects
from app.index.service import IndexMissing, loss_effect_status
from app.index.store import connect, from_blob, get_meta, to_blob
from app.lm.model import LanguageModel
from app.sae.jumprelu import JumpReLUSAE

log = logging.getLogger(__name__)

_locks: dict[tuple[str, int], threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_of(db_path: Path, latent: int) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault((str(db_path.resolve()), latent), threading.Lock())


def ensure_loss_effects(db_path: str | os.PathLike, lm: LanguageModel, sae: JumpReLUSAE, hook: tuple[str, int],
                        latent: int) -> str:
    """Compute and store the latent's loss effects when they are pending; returns the status afterwards.

    IndexMissing when there is no database; a read-only one: the status stays 'pending' (nothing can be cached,
    so nothing is computed; the log says why).
    """
    path = Path(db_path)
    if not path.is_file():
        raise IndexMissing(f"no latent index at {path}: run `jumpscope index` first")
    with _lock_of(path, latent):
        with closing(connect(path, readonly=True)) as conn:
            if loss_effect_status(conn, latent) != "pending":
                return loss_effect_status(conn, latent)
            cfg = IndexConfig.from_json(get_meta(conn, "config", {}))
            n, width, pos_b, grp_b = conn.execute(
                "SELECT n, width, positions, groups FROM examples WHERE latent = ? AND kind = 'top'",
                (latent,)).fetchone()
            pos = torch.from_numpy(from_blob(pos_b, "int64").copy())
            group = torch.from_numpy(from_blob(grp_b, "int32").astype(np.int64))
            want = sorted(set((pos // cfg.context_size).tolist()))
            q = f"SELECT row, token_ids FROM corpus_rows WHERE row IN ({','.join('?' * len(want))})"
            rows = {int(r): from_blob(b, "int32").tolist() for r, b in conn.execute(q, want)}
        if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
            log.warning("%s is read-only: loss effects of latent %d cannot be cached", path, latent)
            return "pending"
        if len(rows) < len(want):
            log.warning("%s lacks corpus rows %s: no loss effects for latent %d", path,
                        sorted(set(want) - set(rows)), latent)
            return "off"
        chosen = group < cfg.loss_effect_top
        ex = ExampleSet(torch.full_like(pos, latent), pos, torch.full_like(pos, TOP), group,
                        torch.zeros(pos.numel()))
        loss = torch.full((n, width), float("nan"))
        loss[chosen] = loss_effects(lm, sae, hook, rows, ex.subset(chosen), cfg)
        try:
            with closing(connect(path)) as conn, conn:
                conn.execute("UPDATE examples SET loss = ? WHERE latent = ? AND kind = 'top' AND loss IS NULL",
                             (to_blob(loss, "float32"), latent))
        except sqlite3.OperationalError as e:  # e.g. a read-only file system
            log.warning("%s: loss effects of latent %d cannot be cached (%s)", path, latent, e)
            return "pending"
        log.info("loss effects of latent %d computed and cached in %s", latent, path)
        return "computed"
