"""Explain (and score) a set of latents of an SAE and store the results in its index.db — resumable.

`run_explain(db, explainer, latents, score=True)` walks the latents in order; a latent is skipped when
`explainer` already explained it with the same prompt version (and, with scoring, every scorer already scored
it), so a rerun after a crash or cancel continues where the last one stopped. Explanations and scores are
stored in batches of `BATCH` latents, whenever progress is reported, and when the run stops (cancel, error).
Dead latents (no example window) are counted, not stored.

Explainers and scorers are looked up by name: 'builtin' lives here; others register a factory with
`register_explainer` / `register_scorer`, or live in a module `app.explain.<name>` that does so on import.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from app.explain import store
from app.explain.base import Explainer, RunCounts, Scorer
from app.explain.builtin import BuiltinExplainer, BuiltinScorer
from app.explain.examples import ExampleSource

log = logging.getLogger(__name__)

ExplainerFactory = Callable[..., Explainer]  # (source: ExampleSource, **options) -> Explainer
ScorerFactory = Callable[..., Scorer]  # (source: ExampleSource, **options) -> Scorer
Progress = Callable[[int, int, RunCounts], None]  # (latents handled, latents asked for, counts so far)
BATCH = 64  # latents stored per transaction (a crash loses at most this much work)

_EXPLAINERS: dict[str, ExplainerFactory] = {
    "builtin": lambda source, **_: BuiltinExplainer.from_token_counts(source.background(), source.vocab)}
_SCORERS: dict[str, ScorerFactory] = {"builtin": lambda source, **_: BuiltinScorer()}


class Cancelled(Exception):
    """The run was asked to stop; everything finished so far is stored (a rerun resumes)."""


def register_explainer(name: str, factory: ExplainerFactory) -> None:
    """Make `--explainer name` build an explainer with `factory(source, **options)`."""
    _EXPLAINERS[name] = factory


def register_scorer(name: str, factory: ScorerFactory) -> None:
    """Make scorer `name` available with `factory(source, **options)`."""
    _SCORERS[name] = factory


def _lookup(table: dict[str, Any], name: str, what: str) -> Any:
    if name not in table and re.fullmatch(r"[a-z][a-z0-9_]*", name):
        try:
            importlib.import_module(f"app.explain.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"app.explain.{name}":
                raise
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; available: {', '.join(sorted(table))}")
    return table[name]


def make_explainer(name: str, source: ExampleSource, **options: Any) -> Explainer:
    """The explainer called `name` ('builtin', or one a plug-in registered), built for `source`."""
    return _lookup(_EXPLAINERS, name, "explainer")(source, **options)


def make_scorer(name: str, source: ExampleSource, **options: Any) -> Scorer:
    """The scorer called `name`, built for `source`."""
    return _lookup(_SCORERS, name, "scorer")(source, **options)


def parse_latents(spec: str | None, d_sae: int) -> list[int] | None:
    """'0-99,7' → [0, …, 99, 7] (sorted, unique); None/'' → None (all). ValueError with the bad part."""
    if spec is None or not spec.strip():
        return None
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not m:
            raise ValueError(f"--latents: {part!r} is not a number or a range like 0-99")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise ValueError(f"--latents: range {part!r} ends before it starts")
        if hi >= d_sae:
            raise ValueError(f"--latents: {hi} is out of range: this SAE has latents 0..{d_sae - 1}")
        out.update(range(lo, hi + 1))
    return sorted(out)


def run_explain(db_path: str | os.PathLike, explainer: str | Explainer = "builtin",
                latents: Iterable[int] | None = None, score: bool = True,
                scorers: list[str | Scorer] | None = None, progress: Progress | None = None,
                should_stop: Callable[[], bool] | None = None, options: dict[str, Any] | None = None
                ) -> RunCounts:
    """Explain (and score) `latents` (default: all) of the index at `db_path`; returns what was done.

    `scorers` defaults to the explainer's `default_scorers` attribute, else the model-free 'builtin' score.
    `should_stop()` is polled between latents; when it answers True the run stops with `Cancelled` (work so far
    is kept).
    Explainer errors on one latent are logged and counted (`failed`), and the run goes on.
    """
    options = options or {}
    counts = RunCounts()
    with ExampleSource(db_path) as source:
        exp = explainer if not isinstance(explainer, str) else make_explainer(explainer, source, **options)
        if exp.name == store.HUMAN:
            raise ValueError("the explainer name 'human' is reserved for hand-written explanations")
        wanted = list(range(source.d_sae)) if latents is None else [int(i) for i in latents]
        for i in wanted:
            if not 0 <= i < source.d_sae:
                raise ValueError(f"latent {i} is out of range: this SAE has latents 0..{source.d_sae - 1}")
        if scorers is None:  # an explainer may name its own (LLM explainers: detection, fuzzing …)
            scorers = list(getattr(exp, "default_scorers", None) or ["builtin"])
        scs = [s if not isinstance(s, str) else make_scorer(s, source, **options) for s in (scorers if score else [])]
        conn = store.open_db(db_path)
        try:
            done = store.done_latents(conn, exp.name, exp.prompt_version)
            scored = {s.name: store.scored_latents(conn, exp.name, s.name, _first_metric(s)) for s in scs}
            todo = [i for i in wanted if i not in done or any(i not in scored[s.name] for s in scs)]
            counts.skipped = len(wanted) - len(todo)
            log.info("explain %s: %d latents asked, %d done before, %d to go", exp.name, len(wanted),
                     counts.skipped, len(todo))
            t0, last = time.perf_counter(), 0.0
            batch = _Batch(conn)
            try:
                for k, ex in enumerate(source.iter(todo)):
                    if should_stop is not None and should_stop():
                        raise Cancelled(f"stopped after {k} of {len(todo)} latents; rerun to resume")
                    _one(conn, exp, scs, ex, ex.latent in done, counts, batch)
                    if progress is not None and (time.perf_counter() - last > 0.5 or k + 1 == len(todo)):
                        batch.flush()  # what progress reports is stored
                        last = time.perf_counter()
                        progress(counts.skipped + k + 1, len(wanted), counts)
            finally:
                batch.flush()
            log.info("explain %s: %d explained, %d scored, %d dead, %d failed in %.1f s", exp.name, counts.explained,
                     counts.scored, counts.dead, counts.failed, time.perf_counter() - t0)
        finally:
            conn.close()
    return counts


def _first_metric(scorer: Scorer) -> str:
    """The metric whose presence marks a latent as scored by `scorer` ('metrics' attribute, else 'precision')."""
    metrics = getattr(scorer, "metrics", None)
    return metrics[0] if metrics else "precision"


class _Batch:
    """Explanations and scores waiting to be stored together (one transaction per BATCH latents)."""

    def __init__(self, conn: Any) -> None:
        self.conn, self.explanations, self.scores = conn, [], []

    def add(self, explanation: store.Explanation | None, scores: list[store.Score]) -> None:
        if explanation is not None:
            self.explanations.append(explanation)
        self.scores += scores
        if len(self.explanations) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if self.explanations or self.scores:
            store.put_batch(self.conn, self.explanations, self.scores)
            self.explanations, self.scores = [], []


def _one(conn: Any, exp: Explainer, scorers: list[Scorer], ex: Any, explained_before: bool, counts: RunCounts,
         batch: _Batch) -> None:
    """Explain (unless done) and score one latent; store both."""
    if ex.is_dead:
        counts.dead += 1
        return
    new = None
    if explained_before:
        stored = store.get_explanation(conn, ex.latent, exp.name)
        text = stored.text if stored else ""
    else:
        try:
            text = exp.explain(ex).strip()
        except Exception as e:  # an LLM endpoint error must not end a 16k-latent run
            counts.failed += 1
            if len(counts.errors) < 20:
                counts.errors.append(f"latent {ex.latent}: {e}")
            log.warning("explain %s: latent %d failed: %s", exp.name, ex.latent, e)
            return
        if not text:
            counts.dead += 1
            return
        new = store.Explanation(ex.latent, text, exp.name, exp.prompt_version, time.time(), "auto")
        counts.explained += 1
    results = []
    for s in scorers:
        try:
            results += [store.Score(ex.latent, exp.name, s.name, m.metric, m.value, m.n) for m in s.score(ex, text)]
        except Exception as e:
            counts.failed += 1
            log.warning("score %s: latent %d failed: %s", s.name, ex.latent, e)
    batch.add(new, results)
    counts.scored += bool(results)
