"""After-pass work: example windows, loss effects, logit effects, decoder neighbours — written in one transaction.

The previous final tables stay readable until the new ones replace them (extending an index keeps the old
dashboards visible while it runs).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time

import numpy as np
import torch

from app.index.activations import fetch_rows
from app.index.config import IndexConfig
from app.index.examples import KIND_NAMES, TOP, ExampleSet, chosen_examples, window_index, window_values
from app.index.loss_effects import ablated_tokens, loss_effects
from app.index.progress import Progress
from app.index.state import IndexState
from app.index.store import ensure_vocab, set_meta, to_blob
from app.lm.logit_lens import logit_effects
from app.lm.model import LanguageModel
from app.sae.geometry import decoder_directions, decoder_neighbors
from app.sae.jumprelu import JumpReLUSAE

log = logging.getLogger(__name__)


@torch.no_grad()
def finalize_index(conn: sqlite3.Connection, lm: LanguageModel, sae: JumpReLUSAE, hook: tuple[str, int],
                   state: IndexState, cfg: IndexConfig, corpus: str | os.PathLike,
                   norm_ref: float | None, progress_every: float | None = None) -> None:
    """Compute everything the dashboards show beyond the running statistics and store it.

    Each phase logs its progress with rate and ETA (app/index/progress.py, at most every `progress_every`
    seconds) and its seconds go to the meta key `finalize_phases`.
    """
    t0 = time.perf_counter()
    phases: dict[str, float] = {}

    def phase(name: str, total: float, unit: str) -> Progress:
        return Progress(f"index finalise, {name}", total, unit, progress_every, log)

    state = state.to("cpu")
    ex, edges = chosen_examples(state, cfg)
    wanted = torch.unique(ex.pos // cfg.context_size).tolist()
    p = phase("corpus rows", max(wanted, default=-1) + 1, "rows")
    rows = fetch_rows(lm, corpus, cfg.context_size, wanted, p.update)
    phases["corpus_rows"] = p.close()
    p = phase("example windows", len(rows), "rows")
    tok, vals = window_values(lm, sae, hook, rows, ex, cfg, norm_ref, p.update)
    phases["example_windows"] = p.close()
    loss = torch.full_like(vals, float("nan"))
    chosen = ex.is_top & (ex.group < cfg.loss_effect_top)
    mode = loss_effect_mode(cfg, ex.subset(chosen), sae.d_sae, len(rows) and (max(rows) + 1) * cfg.context_size)
    if mode == "eager" and bool(chosen.any()):
        p = phase("loss effects", int(chosen.sum()), "examples")
        loss[chosen] = loss_effects(lm, sae, hook, rows, ex.subset(chosen), cfg, on_progress=p.update)
        phases["loss_effects"] = p.close()
    lazy_rows = torch.unique(ex.pos[chosen] // cfg.context_size).tolist() if mode == "lazy" else []
    p = phase("logit effects and neighbours", state.n, "latents")
    w_dec = decoder_directions(sae)
    logits = logit_effects(lm, w_dec, cfg.n_logits)
    nbr_ids, nbr_cos = decoder_neighbors(w_dec, cfg.n_neighbors)
    p.update(state.n)
    phases["logits_neighbours"] = p.close()
    p = phase("write", state.n, "latents")
    _, ix, _ = window_index(ex.pos, cfg)
    centers = (ex.pos % cfg.context_size) - ix[:, 0]
    top_token = torch.full((state.n,), -1, dtype=torch.long)
    first = ex.is_top & (ex.group == 0)
    top_token[ex.latent[first]] = tok[first, :].gather(1, centers[first].view(-1, 1)).view(-1)
    with conn:
        conn.execute("DELETE FROM latents")
        conn.execute("DELETE FROM examples")
        conn.execute("DELETE FROM theta_window")
        conn.execute("DELETE FROM corpus_rows")
        conn.executemany("INSERT INTO corpus_rows VALUES (?,?)", ((r, to_blob(rows[r], "int32")) for r in lazy_rows))
        conn.executemany("INSERT INTO theta_window VALUES (?,?)",
                         ((i, to_blob(state.pre_hist[i], "int64")) for i in range(state.n)))
        ensure_vocab(conn, lm.token_strs(list(range(len(lm.tokenizer)))))
        conn.executemany(
            "INSERT INTO latents VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            _latent_rows(state, sae.threshold.detach().float().cpu(), top_token, edges, logits, nbr_ids, nbr_cos),
        )
        conn.executemany("INSERT INTO examples VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                         _example_rows(ex, tok, vals, loss if mode == "eager" else None, centers))
        p.update(state.n)
        phases["write"] = p.close()
        set_meta(conn, "loss_effects", mode)
        set_meta(conn, "status", "complete")
        set_meta(conn, "finalized_at", time.time())
        set_meta(conn, "finalize_seconds", time.perf_counter() - t0)
        set_meta(conn, "finalize_phases", {k: round(v, 3) for k, v in phases.items()})
    log.info("index finalised in %.1f s", time.perf_counter() - t0)


def loss_effect_mode(cfg: IndexConfig, chosen: ExampleSet, d_sae: int, pass_tokens: int) -> str:
    """'eager', 'lazy' or 'off' (meta `loss_effects`). 'auto' is eager when the estimated tokens of the ablated
    forwards are at most the tokens of the pass (each example needs its own ablated forward, so a large index
    goes lazy: app/index/lazy_loss.py computes a latent's on its first dashboard view and caches them)."""
    if not cfg.loss_effects:
        return "off"
    if cfg.loss_effects_when != "auto":
        return cfg.loss_effects_when
    need = ablated_tokens(chosen, cfg, d_sae)
    mode = "eager" if need <= pass_tokens else "lazy"
    log.info("loss effects %s: ~%d ablated-forward tokens vs %d in the pass", mode, need, pass_tokens)
    return mode


def _latent_rows(state, threshold, top_token, edges, logits, nbr_ids, nbr_cos):
    top_ids, top_vals, bot_ids, bot_vals = logits
    for i in range(state.n):
        yield (
            i, int(state.count[i]), float(state.total[i]), float(state.max[i]), float(threshold[i]),
            int(top_token[i]) if top_token[i] >= 0 else None,
            to_blob(state.hist[i], "int64"), to_blob(edges[i], "float64"),
            to_blob(top_ids[i], "int32"), to_blob(top_vals[i], "float32"),
            to_blob(bot_ids[i], "int32"), to_blob(bot_vals[i], "float32"),
            to_blob(nbr_ids[i], "int32"), to_blob(nbr_cos[i], "float32"),
        )


def _example_rows(ex: ExampleSet, tok, vals, loss, centers):
    """One row per (latent, kind): top examples and near misses by rank; interval samples by interval, then
    value desc."""
    lat, kind = ex.latent.numpy(), ex.kind.numpy()
    order = np.lexsort((-ex.value.numpy(), ex.group.numpy(), kind, lat))
    key = lat[order] * len(KIND_NAMES) + kind[order]
    bounds = np.flatnonzero(np.diff(key)) + 1
    for part in np.split(order, bounds):
        if part.size == 0:
            continue
        p = torch.from_numpy(part)
        is_top = bool(kind[part[0]] == TOP)
        yield (
            int(lat[part[0]]), KIND_NAMES[kind[part[0]]], int(part.size), int(tok.shape[1]),
            to_blob(tok[p], "int32"), to_blob(vals[p], "float32"),
            to_blob(loss[p], "float32") if is_top and loss is not None else None,
            to_blob(centers[p], "int32"), to_blob(ex.value[p], "float32"),
            to_blob(ex.group[p], "int32"), to_blob(ex.pos[p], "int64"),
        )
