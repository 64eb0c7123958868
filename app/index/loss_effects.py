"""Per-token loss effects of ablating a latent on its top example windows (SPEC §4).

Loss effect of token p = CE(p | ablated) − CE(p | clean), CE(p) = −log P(token p | tokens < p); ablating latent
i clamps it to 0 at every non-special position of the row (h ← h + (0 − f_i(h))·d_i); 0 at the first token of a
row. Positive: the latent helped.

The work is organised by corpus row, so that nothing is computed twice:
* the clean forward runs once per row (up to the last window end in it) and serves every example there;
* the ablated forwards run once per (row, latent) — a latent's several windows in one row share it — and
  the latents of one row are batched (one batch row per latent, each ablating its own latent);
* a causal LM's CE at p depends only on tokens < p, so each forward stops at the last window end it needs,
  and the unembedding (the largest matmul for small models) runs only at the scored window positions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from app.index.activations import encode_pairs, prepare_input
from app.index.config import IndexConfig
from app.index.examples import ExampleSet, window_index
from app.lm.hooks import intervene
from app.lm.model import LanguageModel
from app.sae.jumprelu import JumpReLUSAE

TOKEN_BUDGET = 1 << 14  # batch rows × tokens per ablated forward (bounds activation memory)


@torch.no_grad()
def loss_effects(lm: LanguageModel, sae: JumpReLUSAE, hook: tuple[str, int], rows: dict[int, list[int]],
                 ex: ExampleSet, cfg: IndexConfig, logit_budget: int = 1 << 25,
                 on_progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Per-token loss effect [E, W] of ablating each example's latent (NaN outside the window).

    `on_progress(n)` is called after each forward with the number of examples it finished.
    """
    row, idx, valid = window_index(ex.pos, cfg)
    n_ex, width = idx.shape
    out = torch.full((n_ex, width), float("nan"), dtype=torch.float32)
    if n_ex == 0:
        return out
    row_len = torch.tensor([len(rows[r]) for r in row.tolist()], dtype=torch.long)
    valid = valid & (idx < row_len.view(-1, 1))  # the corpus's last row may be short
    d_sae = sae.d_sae
    group_key, group_of = torch.unique(row * d_sae + ex.latent, return_inverse=True)  # sorted: row, then latent
    n_groups = group_key.numel()
    ends = torch.where(valid, idx, torch.zeros_like(idx)).amax(1) + 1
    g_end = torch.zeros(n_groups, dtype=torch.long).scatter_reduce(0, group_of, ends, "amax")
    g_size = torch.bincount(group_of, minlength=n_groups)
    slot = _rank_within(group_of, n_groups)  # which of its group's windows an example is
    g_row = group_key // d_sae
    vocab = lm.unembed.shape[1]
    d_dec = sae.W_dec / sae.input_scale
    for r in torch.unique(g_row).tolist():
        gs = (g_row == r).nonzero().squeeze(1)
        es = (row == r).nonzero().squeeze(1)
        length = min(max(int(g_end[gs].max()), 2), len(rows[r]))  # ≥ 2: position 1 pads the scored ones
        ids = torch.tensor(rows[r][:length], dtype=torch.long).view(1, -1)
        need = torch.unique(idx[es][valid[es]])
        need = need[need >= 1]
        clean = torch.zeros(length, dtype=torch.float32)
        if need.numel():
            clean[need] = _ce_at(lm, ids, need.view(1, -1))[0]
        special = lm.special_mask(ids).to(sae.device)
        # Groups with as many windows and similar lengths share a batch (its width is its largest group's).
        gs = gs[torch.argsort(g_size[gs] * (length + 1) + g_end[gs], stable=True)]
        b = 0
        while b < gs.numel():
            k = int(g_size[gs[b]]) * width
            per_batch = max(1, min(64, logit_budget // (k * vocab), TOKEN_BUDGET // length))
            g = gs[b:b + per_batch]
            g = g[g_size[g] == g_size[gs[b]]]
            b += g.numel()
            local = torch.full((n_groups,), -1, dtype=torch.long)
            local[g] = torch.arange(g.numel())
            e = es[local[group_of[es]] >= 0]
            be, cols = local[group_of[e]], slot[e].view(-1, 1) * width + torch.arange(width)
            pos = torch.ones((g.numel(), k), dtype=torch.long)  # padding: any scorable position
            pos[be.view(-1, 1), cols] = torch.where(valid[e], idx[e], 1).clamp_min(1)
            n = min(max(int(g_end[g].max()), 2), length)
            lats = (group_key[g] % d_sae).to(sae.device)
            batch_ids = ids[:, :n].expand(g.numel(), n)
            with intervene(lm, *hook, _ablation(sae, lats, special, d_dec)):
                ablated = _ce_at(lm, batch_ids, pos)
            eff = ablated[be.view(-1, 1), cols] - clean[idx[e].clamp_max(length - 1)]
            eff = torch.where(idx[e] == 0, torch.zeros_like(eff), eff)  # (NaN below where not valid)
            out[e] = torch.where(valid[e], eff, torch.full_like(eff, float("nan")))
            if on_progress is not None:
                on_progress(int(e.numel()))
    return out


def ablated_tokens(ex: ExampleSet, cfg: IndexConfig, d_sae: int) -> int:
    """Tokens the ablated forwards of `loss_effects` would run: Σ over (row, latent) of its last window end."""
    if ex.latent.numel() == 0:
        return 0
    row, idx, valid = window_index(ex.pos, cfg)
    ends = torch.where(valid, idx, torch.zeros_like(idx)).amax(1) + 1
    key, group_of = torch.unique(row * d_sae + ex.latent, return_inverse=True)
    g_end = torch.zeros(key.numel(), dtype=torch.long).scatter_reduce(0, group_of, ends, "amax")
    return int(g_end.clamp_min(2).sum())


def _ablation(sae: JumpReLUSAE, lats: torch.Tensor, special: torch.Tensor, d_dec: torch.Tensor):
    """Intervention fn: batch row b clamps latent lats[b] to 0 at every non-special position."""
    def ablate(h: torch.Tensor, offset: int) -> torch.Tensor:
        f = encode_pairs(sae, prepare_input(sae, h), lats) * ~special[:, offset:offset + h.shape[1]]
        return h - (f.unsqueeze(-1) * d_dec[lats].unsqueeze(1)).to(h.dtype)
    return ablate


def _rank_within(group_of: torch.Tensor, n_groups: int) -> torch.Tensor:
    """For each item, how many earlier items (in index order) share its group: 0, 1, 2 …"""
    order = torch.argsort(group_of, stable=True)
    sizes = torch.bincount(group_of, minlength=n_groups)
    starts = torch.cumsum(sizes, 0) - sizes
    rank = torch.empty_like(group_of)
    rank[order] = torch.arange(group_of.numel()) - starts[group_of[order]]
    return rank


def _ce_at(lm: LanguageModel, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """CE of token ids[b, pos[b, k]] given the tokens before it: [B, K] (every pos >= 1).

    The unembedding sees only the hidden states at pos − 1 (a pre-hook gathers them), so a model's own
    logit post-processing (Gemma's soft-capping) still applies while the [T, vocab] logits are never built.
    """
    dev = lm.device
    gather = (pos - 1).to(dev)

    def pick(module, args):
        h = args[0]
        at = gather.view(*gather.shape, 1).expand(-1, -1, h.shape[-1])
        return (h.gather(1, at), *args[1:])

    handle = lm.model.get_output_embeddings().register_forward_pre_hook(pick)
    try:
        logits = lm.model(input_ids=ids.to(dev), use_cache=False).logits.float()
    finally:
        handle.remove()
    logp = torch.log_softmax(logits, dim=-1)
    target = ids.to(dev).gather(1, pos.to(dev))
    return -logp.gather(2, target.unsqueeze(-1)).squeeze(-1).cpu()
