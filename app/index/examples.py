"""After the pass: per-token values and ablation loss effects for the chosen example windows.

Only the corpus rows that hold a chosen example are re-run. Values of one latent per example are computed
from the hook activations directly (no full encode). Loss effect of token p = CE(p | ablated) − CE(p | clean),
where CE(p) = −log P(token p | tokens < p) and ablating latent i clamps it to 0 at every non-special
position (SPEC §4: h ← h + (0 − f_i(h))·d_i); 0 at the first token of a row. Positive: the latent helped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from app.index.activations import encode_pairs, keep_mask, prepare_input
from app.index.config import IndexConfig
from app.index.state import IndexState, interval_samples
from app.lm.hooks import capture, intervene
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
                  ex: ExampleSet, cfg: IndexConfig, norm_ref: float | None):
    """(token ids [E, W] int64 with −1 padding, values [E, W] float32) of every example window.

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
    return tok, vals


@torch.no_grad()
def loss_effects(lm: LanguageModel, sae: JumpReLUSAE, hook: tuple[str, int], rows: dict[int, list[int]],
                 ex: ExampleSet, cfg: IndexConfig, logit_budget: int = 1 << 25) -> torch.Tensor:
    """Per-token loss effect [E, W] of ablating each example's latent (NaN outside the window)."""
    row, idx, valid = window_index(ex.pos, cfg)
    n_ex, width = idx.shape
    out = torch.full((n_ex, width), float("nan"), dtype=torch.float32)
    ends = torch.where(valid, idx, torch.zeros_like(idx)).amax(1) + 1
    order = torch.argsort(ends, stable=True)  # similar lengths and windows share a batch
    vocab = lm.unembed.shape[1]
    per_batch = max(1, min(64, logit_budget // ((width + 16) * vocab)))
    dev = lm.device
    d_dec = (sae.W_dec / sae.input_scale)
    for b in range(0, n_ex, per_batch):
        e = order[b:b + per_batch]
        length = int(ends[e].max())
        ids = torch.tensor([rows[int(r)][:length] for r in row[e]], dtype=torch.long).to(dev)
        first = max(int(idx[e, 0].min()) - 1, 0)
        keep_n = length - first
        lats = ex.latent[e].to(sae.device)
        special = lm.special_mask(ids).to(sae.device)

        def ablate(h: torch.Tensor, offset: int, lats=lats, special=special) -> torch.Tensor:
            f = encode_pairs(sae, prepare_input(sae, h), lats) * ~special[:, offset:offset + h.shape[1]]
            return h - (f.unsqueeze(-1) * d_dec[lats].unsqueeze(1)).to(h.dtype)

        clean = _token_ce(lm, ids, keep_n)
        with intervene(lm, *hook, ablate):
            ablated = _token_ce(lm, ids, keep_n)
        delta = (ablated - clean).cpu()  # column q is token position first + 1 + q
        ix = idx[e]
        eff = delta.gather(1, (ix - first - 1).clamp(0, delta.shape[1] - 1))
        eff = torch.where(ix == 0, torch.zeros_like(eff), eff)
        out[e] = torch.where(valid[e], eff, torch.full_like(eff, float("nan")))
    return out


def _token_ce(lm: LanguageModel, ids: torch.Tensor, keep_n: int) -> torch.Tensor:
    """CE of each of the last keep_n − 1 tokens given what precedes it: [B, keep_n − 1]."""
    logits = lm.model(input_ids=ids, use_cache=False, logits_to_keep=keep_n).logits.float()
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    target = ids[:, ids.shape[1] - keep_n + 1:]
    return -logp.gather(2, target.unsqueeze(-1)).squeeze(-1)
