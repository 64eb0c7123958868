"""After the pass: the chosen example windows and their per-token values (loss effects: loss_effects.py).

Only the corpus rows that hold a chosen example are re-run. Values of one latent per example are computed
from the hook activations directly (no full encode).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from app.index.activations import keep_mask, prepare_input
from app.index.config import IndexConfig
from app.index.state import IndexState, interval_samples
from app.lm.hooks import capture
from app.lm.model import LanguageModel
from app.sae.jumprelu import JumpReLUSAE

TOP, INTERVAL, NEAR = 0, 1, 2  # example kinds
KIND_NAMES = ("top", "interval", "near")  # as stored in the examples table


@dataclass
class ExampleSet:
    """Flat list of examples: which latent, where, and which list (top rank, interval, near-miss rank) it is in."""

    latent: torch.Tensor  # int64 [E]
    pos: torch.Tensor  # int64 [E] global position of the centre token
    kind: torch.Tensor  # int64 [E] TOP, INTERVAL or NEAR
    group: torch.Tensor  # int64 [E] rank among the top examples / near misses, or interval index
    value: torch.Tensor  # float32 [E] activation (near misses: pre-activation) at the centre, from the pass

    @property
    def is_top(self) -> torch.Tensor:
        return self.kind == TOP

    @property
    def is_near(self) -> torch.Tensor:
        return self.kind == NEAR

    def subset(self, mask: torch.Tensor) -> ExampleSet:
        return ExampleSet(self.latent[mask], self.pos[mask], self.kind[mask], self.group[mask], self.value[mask])


def _ranked(val: torch.Tensor, pos: torch.Tensor, kind: int) -> ExampleSet:
    n, k = pos.shape
    ok = pos >= 0
    lat = torch.arange(n).view(n, 1).expand(n, k)[ok]
    rank = torch.arange(k).view(1, k).expand(n, k)[ok]
    return ExampleSet(lat, pos[ok], torch.full_like(lat, kind), rank, val[ok])


def chosen_examples(state: IndexState, cfg: IndexConfig) -> tuple[ExampleSet, torch.Tensor]:
    """All top, interval and near-miss examples of every latent, and the interval edges [d_sae, I+1]."""
    n = state.n
    ipos, ival, edges = interval_samples(state, cfg)
    iok = ipos >= 0
    shape = ipos.shape
    lat_i = torch.arange(n).view(n, 1, 1).expand(shape)[iok]
    j = torch.arange(shape[1]).view(1, -1, 1).expand(shape)[iok]
    parts = [_ranked(state.top_val, state.top_pos, TOP),
             ExampleSet(lat_i, ipos[iok], torch.full_like(lat_i, INTERVAL), j, ival[iok]),
             _ranked(state.near_val, state.near_pos, NEAR)]
    ex = ExampleSet(*(torch.cat([getattr(p, f) for p in parts]) for f in ("latent", "pos", "kind", "group", "value")))
    return ex, edges


def window_index(pos: torch.Tensor, cfg: IndexConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, token index [E, W] clipped into the row, valid [E, W]) of each example's window."""
    ctx, width = cfg.context_size, cfg.window_before + cfg.window_after + 1
    row, t = pos // ctx, pos % ctx
    start = (t - cfg.window_before).clamp_min(0)
    end = (t + cfg.window_after + 1).clamp_max(ctx)
    idx = start.view(-1, 1) + torch.arange(width).view(1, -1)
    return row, idx.clamp_max(ctx - 1), idx < end.view(-1, 1)


@torch.no_grad()
def window_values(lm: LanguageModel, sae: JumpReLUSAE, hook: tuple[str, int], rows: dict[int, list[int]],
                  ex: ExampleSet, cfg: IndexConfig, norm_ref: float | None,
                  on_progress: Callable[[int], None] | None = None):
    """(token ids [E, W] int64 with −1 padding, values [E, W] float32) of every example window.

    `on_progress(n)` is called after each batch with its number of rows.

    Values are the latent's activations, except for near misses: their pre-activations (the activation is
    pre where pre > θ, else 0). Rows are re-run in batches and encoded latent chunk by latent chunk; each
    example gathers its window.
    """
    row, idx, valid = window_index(ex.pos, cfg)
    n_ex, width = idx.shape
    tok = torch.full((n_ex, width), -1, dtype=torch.long)
    vals = torch.zeros((n_ex, width), dtype=torch.float32)
    uniq = torch.unique(row).tolist()
    dev = sae.device
    local = torch.full((int(row.max()) + 1 if n_ex else 1,), -1, dtype=torch.long)
    for b in range(0, len(uniq), cfg.batch_contexts):
        batch_rows = uniq[b:b + cfg.batch_contexts]
        ids = torch.tensor([rows[r] for r in batch_rows], dtype=torch.long)
        h = capture(lm, ids, None, *hook)
        keep = keep_mask(lm, ids, h, cfg.outlier_factor, norm_ref)
        x = prepare_input(sae, h.reshape(-1, h.shape[-1]))
        local[torch.tensor(batch_rows)] = torch.arange(len(batch_rows))
        in_batch = (local[row] >= 0).nonzero(as_tuple=True)[0]
        for lo in range(0, sae.d_sae, cfg.latent_chunk):
            hi = min(lo + cfg.latent_chunk, sae.d_sae)
            e = in_batch[(ex.latent[in_batch] >= lo) & (ex.latent[in_batch] < hi)]
            if e.numel() == 0:
                continue
            pre = torch.addmm(sae.b_enc[lo:hi], x, sae.W_enc[:, lo:hi]).view(len(batch_rows), cfg.context_size,
                                                                             hi - lo)
            lr, ix = local[row[e]].view(-1, 1).to(dev), idx[e].to(dev)
            lat_e = (ex.latent[e] - lo).view(-1, 1).to(dev)
            got = pre[lr, ix, lat_e]
            active = got > sae.threshold[lo:hi][lat_e]
            got = torch.where(active | ex.is_near[e].view(-1, 1).to(dev), got, torch.zeros_like(got))
            got = got * keep[lr, ix]
            vals[e] = got.float().cpu() * valid[e]
        lr_all = local[row[in_batch]].view(-1, 1)
        tok[in_batch] = torch.where(valid[in_batch], ids[lr_all, idx[in_batch]], -1)
        local[torch.tensor(batch_rows)] = -1
        if on_progress is not None:
            on_progress(len(batch_rows))
    return tok, vals
