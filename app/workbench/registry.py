"""The workbench's per-SAE sample caches: built on first use, kept for the next requests (a few SAEs at most).

Callers serialise model calls (the web app runs these inside `Services.run`), so no lock is needed here.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path

from app.lm.model import LanguageModel
from app.sae.jumprelu import JumpReLUSAE
from app.workbench.cache import SampleCache, build_cache
from app.workbench.sample import DEFAULT_TOKENS, choose_sample, load_sample

log = logging.getLogger(__name__)


class SampleCaches:
    """Least-recently-used SampleCache per (SAE folder, loaded SAE object)."""

    def __init__(self, tokens: int = DEFAULT_TOKENS, max_entries: int = 2, corpus: str | None = None) -> None:
        self.tokens, self.max_entries, self.corpus = tokens, max_entries, corpus
        self._caches: OrderedDict[tuple[str, int], SampleCache] = OrderedDict()

    def get(self, lm: LanguageModel, sae: JumpReLUSAE, folder: str | os.PathLike) -> SampleCache:
        """The SAE's cache, building it (one pass over the sample) when missing. Raises SampleUnavailable."""
        key = (str(Path(folder).resolve()), id(sae))
        cache = self._caches.get(key)
        if cache is not None:
            self._caches.move_to_end(key)
            return cache
        for old in [k for k in self._caches if k[0] == key[0]]:  # the folder's SAE was reloaded
            del self._caches[old]
        spec = choose_sample(folder, context_size=sample_context_size(sae, folder), tokens=self.tokens,
                             corpus=self.corpus, index_db=Path(folder) / "index.db")
        contexts, split = load_sample(lm, spec)
        cache = build_cache(lm, sae, contexts, split)
        self._caches[key] = cache
        while len(self._caches) > self.max_entries:
            self._caches.popitem(last=False)
        return cache


def sample_context_size(sae: JumpReLUSAE, folder: str | os.PathLike) -> int | None:
    """The SAE's training context size (metadata), else its index's."""
    ctx = sae.cfg.metadata.get("context_size")
    if ctx:
        return int(ctx)
    db = Path(folder) / "index.db"
    if db.is_file():
        from app.index.service import index_summary

        try:
            return int((index_summary(db).get("config") or {}).get("context_size") or 0) or None
        except (OSError, ValueError):
            return None
    return None


CACHES = SampleCaches()  # the web app's caches
