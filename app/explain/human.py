"""Hand-written explanations (source 'human'): stored in the index's explanation tables (app/explain/store.py),
shown before any automatic explanation and searchable at once through FTS5.

This is the one home of the write and of its length limit; the web's save route checks the same constant.
"""

from __future__ import annotations

import os
from contextlib import closing

from app.explain import store
from app.index.service import check_latent, open_index

MAX_EXPLANATION = 2000  # characters of a hand-written explanation


def set_explanation(db_path: str | os.PathLike, latent: int, text: str | None) -> None:
    """Store (or, for empty text, remove) a latent's hand-written explanation in the index at `db_path`.

    Raises ValueError past MAX_EXPLANATION characters, LatentNotFound / IndexMissing as the index service does.
    """
    if text is not None and len(text) > MAX_EXPLANATION:
        raise ValueError(f"explanation is too long ({len(text)} characters; at most {MAX_EXPLANATION})")
    with closing(open_index(db_path, readonly=False)) as conn:
        i = check_latent(conn, db_path, latent)
        store.ensure_schema(conn)
        if text is None or not text.strip():
            store.delete_explanation(conn, i, store.HUMAN)
        else:
            store.put_explanation(conn, i, text, store.HUMAN, source=store.HUMAN)
