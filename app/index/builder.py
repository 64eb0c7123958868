"""`jumpscope index`: one streaming pass of the LM (stopped at the hook) over a corpus, for all latents.

Progress is committed to the database with the running state every few batches, so a killed run resumes
from its last commit, and a later run with a larger `tokens` extends the index: both continue the same
deterministic sequence of batches (rows are numbered in corpus order; batch b = rows [b·B, (b+1)·B)).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sqlite3
import time
from pathlib import Path

import torch

from app.index import distributed
from app.index.activations import (
    bookkeeping_threads,
    corpus_rows,
    encode_window,
    keep_mask,
    prepare_input,
    reference_norm,
)
from app.index.collector import Collector
from app.index.config import IndexConfig
from app.index.finalize import finalize_index
from app.index.progress import Progress
from app.index.state import IndexState
from app.index.store import IndexSchemaError, connect, get_meta, load_state, save_state, set_meta
from app.lm.hooks import capture, parse_hook_name
from app.lm.model import LanguageModel
from app.sae.jumprelu import JumpReLUSAE

log = logging.getLogger(__name__)


def sae_fingerprint(sae: JumpReLUSAE) -> str:
    """A cheap digest of the SAE weights (thresholds, biases and a slice of the decoder)."""
    h = hashlib.sha256()
    for t in (sae.threshold, sae.b_enc, sae.b_dec, sae.W_dec[:256], sae.input_scale):
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _check_or_start(conn: sqlite3.Connection, fingerprint: dict, restart: bool) -> None:
    stored = get_meta(conn, "fingerprint")
    if restart or stored is None:
        with conn:
            for table in ("state", "latents", "examples", "theta_window"):
                conn.execute(f"DELETE FROM {table}")
            for key in ("rows_done", "tokens_seen", "norm_reference", "status", "pass_seconds"):
                conn.execute("DELETE FROM meta WHERE key = ?", (key,))
            set_meta(conn, "fingerprint", fingerprint)
        return
    if stored != fingerprint:
        diff = sorted(k for k in set(stored) | set(fingerprint) if stored.get(k) != fingerprint.get(k))
        raise ValueError(f"the index was built with other settings ({', '.join(diff)} differ): pass --restart to "
                         "rebuild it, or --out for a new database")


@torch.no_grad()
def run_index(lm: LanguageModel, sae: JumpReLUSAE, corpus: str | os.PathLike, tokens: int,
              db_path: str | os.PathLike, cfg: IndexConfig, restart: bool = False,
              sae_dir: str | os.PathLike | None = None, progress: bool = False, finalize: bool = True) -> Path:
    """Index `corpus` up to `tokens` tokens in total (resuming / extending `db_path`), then finalise it.

    `finalize=False` stops after the pass (status stays "building"; the next run finalises). The pass and each
    finalise phase log progress with rate and ETA: every 10 s with `progress`, else every minute.
    """
    hook_name = sae.cfg.metadata.get("hook_name")
    if not hook_name:
        raise ValueError("the SAE's cfg.json metadata has no hook_name: cannot tell where to read activations")
    hook = parse_hook_name(hook_name)
    max_pos = lm.max_positions
    if max_pos and cfg.context_size > max_pos:
        raise ValueError(f"context_size {cfg.context_size} exceeds the model's {max_pos} positions")
    if sae.d_in != lm.d_model and hook[0] != "mlp_out":
        log.warning("SAE d_in %d differs from the model width %d", sae.d_in, lm.d_model)
    if tokens < 1:
        raise ValueError("--tokens must be at least 1")
    rank, size = distributed.world()
    every = None if progress else 60.0  # seconds between two progress lines (None: the default 10 s)
    db_path = Path(db_path)
    conn = _connect_writer(db_path, restart) if rank == 0 else None
    fingerprint = {**cfg.fingerprint(), "sae": sae_fingerprint(sae), "hook_name": hook_name}
    if rank == 0:
        _check_or_start(conn, fingerprint, restart)
        _write_info(conn, lm, sae, cfg, sae_dir, corpus)
    distributed.barrier()
    # Every rank reads the committed progress (rank 0 wrote it; readers open the same file).
    reader = conn if rank == 0 else connect(db_path, readonly=True)
    rows_done = int(get_meta(reader, "rows_done", 0))
    tokens_seen = int(get_meta(reader, "tokens_seen", 0))
    norm_ref = get_meta(reader, "norm_reference")
    state = load_state(reader) if rank == 0 else None
    if rank != 0:
        reader.close()
    collector = Collector(sae.d_sae, cfg, sae.device, state, tokens_seen if rank == 0 else 0, sae.threshold)
    committed = collector.state  # the state of every rank's batches so far (merged at each commit)
    ctx, per = cfg.context_size, cfg.batch_contexts
    target_rows = math.ceil(tokens / ctx)
    new_rows = 0
    if rows_done < target_rows:
        t0 = time.perf_counter()  # the pass clock includes the reference batch's capture (reused by batch 0)
        first_h = None  # the reference batch is batch 0 (rank 0's): its capture is reused, not redone
        if cfg.outlier_factor > 0 and norm_ref is None:
            if rank == 0:
                first = torch.tensor(list(corpus_rows(lm, corpus, ctx, 0, min(per, target_rows))), dtype=torch.long)
                first_h = capture(lm, first, None, *hook)
                norm_ref = reference_norm(lm, first, first_h)
            norm_ref = distributed.broadcast_float(norm_ref)
        last_commit, batches_since = time.perf_counter(), 0
        bar = Progress("index pass", (target_rows - rows_done) * ctx, "tokens", every, log) if rank == 0 else None
        rows_iter = corpus_rows(lm, corpus, ctx, rows_done, target_rows)
        start = rows_done
        while start < target_rows:
            want = min((start // per + 1) * per, target_rows) - start  # batches stay aligned to B rows
            batch = [row for _, row in zip(range(want), rows_iter, strict=False)]
            if (start // per) % size == rank and batch:
                index_batch(lm, sae, hook, collector, batch, start, cfg, norm_ref, first_h if start == 0 else None)
                first_h = None
            start += len(batch)
            if bar is not None:
                bar.update(len(batch) * ctx)
            batches_since += 1
            exhausted = len(batch) < want
            round_end = (start // per) % size == 0 or start >= target_rows or exhausted
            due = batches_since >= cfg.commit_every * size or time.perf_counter() - last_commit >= cfg.commit_seconds
            if round_end and (due or start >= target_rows or exhausted):
                committed = _commit(conn, collector, cfg, start, norm_ref)
                new_rows += start - rows_done
                rows_done, last_commit, batches_since = start, time.perf_counter(), 0
            if exhausted:
                log.warning("corpus ended after %d rows (%d tokens); asked for %d tokens", start, start * ctx, tokens)
                break
        if bar is not None:
            bar.close()
        if rank == 0:
            with conn:
                set_meta(conn, "pass_seconds", get_meta(conn, "pass_seconds", 0.0) + time.perf_counter() - t0)
    if rank == 0:
        status = get_meta(conn, "status")
        if finalize and (new_rows or status != "complete"):
            with conn:
                set_meta(conn, "status", "finalizing")
            # Under torchrun the collector holds this rank's batches only: finalise the merged state.
            finalize_index(conn, lm, sae, hook, committed.to(sae.device), cfg, corpus, norm_ref, every)
        conn.close()
    distributed.barrier()
    return db_path


def index_batch(lm: LanguageModel, sae: JumpReLUSAE, hook: tuple[str, int], collector: Collector,
                batch: list[list[int]], first_row: int, cfg: IndexConfig, norm_ref: float | None,
                h: torch.Tensor | None = None) -> None:
    """Capture (unless `h` is given), mask and encode one batch of rows and fold it in, latent chunk by chunk."""
    ids = torch.tensor(batch, dtype=torch.long)
    if h is None:
        h = capture(lm, ids, None, *hook)
    with bookkeeping_threads(h.device):
        keep = keep_mask(lm, ids, h, cfg.outlier_factor, norm_ref)
        b, t = keep.nonzero(as_tuple=True)
        x = prepare_input(sae, h[b, t])
    row = b + first_row
    pos = row * cfg.context_size + t
    for lo in range(0, sae.d_sae, cfg.latent_chunk):
        hi = min(lo + cfg.latent_chunk, sae.d_sae)
        active, below = encode_window(sae, x, lo, hi, cfg)
        collector.update(lo, active, pos, row, below)
    collector.tokens += int(b.numel())


def _commit(conn: sqlite3.Connection | None, collector: Collector, cfg: IndexConfig, rows_done: int,
            norm_ref: float | None) -> IndexState | None:
    """Write the (merged, under torchrun) running state and the progress counters in one transaction.

    Returns the merged state on rank 0 (None on the other ranks).
    """
    merged = distributed.gather_merged(collector.state, cfg)
    tokens = collector.tokens
    if distributed.world()[1] > 1:
        t = torch.tensor([tokens], dtype=torch.float64)
        if torch.distributed.get_backend() == "nccl":
            t = t.cuda()
        torch.distributed.all_reduce(t)
        tokens = int(t.item())
    if conn is None:
        return None
    with conn:
        save_state(conn, merged.to("cpu"))
        set_meta(conn, "rows_done", rows_done)
        set_meta(conn, "tokens_total", rows_done * cfg.context_size)
        set_meta(conn, "tokens_seen", tokens)
        set_meta(conn, "norm_reference", norm_ref)
        set_meta(conn, "status", "building")
        set_meta(conn, "committed_at", time.time())
    return merged


def _connect_writer(db_path: Path, restart: bool) -> sqlite3.Connection:
    """The database for writing; with `restart`, an index of an older schema is deleted and started afresh."""
    try:
        return connect(db_path)
    except IndexSchemaError:
        if not restart:
            raise
        log.warning("%s has an older index schema: rebuilding it (--restart), keeping its explanations", db_path)
        kept = _old_explanations(db_path)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)
        conn = connect(db_path)
        with conn:
            conn.executemany("INSERT INTO explanations(latent, text, updated) VALUES (?, ?, ?)", kept)
        return conn


def _old_explanations(db_path: Path) -> list[tuple]:
    """(latent, text, updated) rows of an index about to be rebuilt (none when unreadable)."""
    try:
        old = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return old.execute("SELECT latent, text, updated FROM explanations").fetchall()
        finally:
            old.close()
    except sqlite3.DatabaseError:
        return []


def _write_info(conn: sqlite3.Connection, lm: LanguageModel, sae: JumpReLUSAE, cfg: IndexConfig,
                sae_dir: str | os.PathLike | None, corpus: str | os.PathLike) -> None:
    """SAE metadata, the index settings, the corpus and eval metrics (eval.json beside the SAE, when present)."""
    with conn:
        corpus_spec = str(corpus)
        set_meta(conn, "corpus", corpus_spec if corpus_spec.startswith("hf:") else str(Path(corpus).resolve()))
        set_meta(conn, "config", cfg.to_json())
        set_meta(conn, "sae", {**sae.cfg.to_json(), "path": str(sae_dir) if sae_dir else None})
        set_meta(conn, "d_sae", sae.d_sae)
        set_meta(conn, "model", {"name": lm.name, "model_type": lm.model.config.model_type,
                                 "d_model": lm.d_model, "n_layers": lm.n_layers})
        eval_path = Path(sae_dir) / "eval.json" if sae_dir else None
        if eval_path is not None and eval_path.is_file():
            try:
                set_meta(conn, "eval", json.loads(eval_path.read_text()))
            except json.JSONDecodeError:
                log.warning("%s is not valid JSON; eval metrics not stored", eval_path)
