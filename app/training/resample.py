"""Split latents (two latents that fire on the same tokens) and collapsed latents, and their re-initialisation.

With d_sae close to the number of directions in the data, a direction can end up shared by two latents that
fire on the same tokens (each its decoder row mostly along that direction, plus a part of some rarer direction),
while the rarer directions get no latent of their own: a local optimum the gradient does not leave (planted s2,
docs/training.md, twenty-third pass). The two latents' firing sets coincide, which a batch shows:

    J(i, j) = |A_i ∩ A_j| / |A_i ∪ A_j|,   A_i = the tokens of the batch on which latent i fires.

Their codes also move together (both follow the magnitude of the one direction), so a pair with J ≥ the threshold,
at least MIN_COFIRE shared tokens and codes correlated at r ≥ MIN_CORRELATION on them is a split. Its weaker latent
(the smaller Σ_t f_ti · ‖W_dec,i‖ over the batch) is moved where the dictionary fails most, as Anthropic's
resampling does for dead latents: a token t drawn with probability ∝ ‖x_t − x̂_t‖², the latent's decoder row
along the residual e_t = x_t − x̂_t (its norm kept), its encoder column along e_t at the mean norm of the others,
b_enc 0, and θ at half its new pre-activation on t, so that it fires there and training decides the rest. Its Adam
moments restart.

Collapsed latents (--collapse-share S): on planted s16n most latents that hold no planted direction have a gain
g_i = ‖W_enc,i‖·‖W_dec,i‖ about a sixth of the others' (tiny codes, θ kept low by the dead-latent θ reset), so they
fire now and then, are never dead for AuxK and learn nothing (docs/training.md, twenty-eighth pass). Only the
product is a property of the latent: scaling its encoder column (b_enc and θ) by c and its decoder row by 1/c
computes the same x̂. The latents with g_i < S · median(g) are moved onto the directions the dictionary misses
(app/training/missing_directions.py: recurring directions of the residuals of the last steps, matched to the
collapsed latents by cosine), as many as there are such directions, each re-initialised as a split latent is along
its direction (θ from the pooled input its cluster was seeded at), its decoder row at the others' mean norm, since
the short row is what collapsed. Collapsed latents left without a direction stay as they are (thirty-second pass;
before it each moved to the residual of one token drawn ∝ ‖x − x̂‖², which also moved slow latents that would have
got somewhere onto mixtures).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import torch

from app.sae import JumpReLUSAE
from app.training.distributed import DistContext
from app.training.missing_directions import ResidualPool, match, missing_directions, unit_rows

log = logging.getLogger(__name__)

MIN_COFIRE = 8  # shared firings a pair needs in the batch before its Jaccard index counts
MIN_CORRELATION = 0.8  # split pairs' codes: r 0.90-0.995 (planted s2); two directions that merely fire together
#                        (siblings under one parent, planted s8h) mostly vary apart (r 0.12-0.83)
THETA_SHARE = 0.5  # a re-initialised latent's θ as a share of its pre-activation on the token it was drawn at


@torch.no_grad()
def cofire_counts(active: torch.Tensor) -> torch.Tensor:
    """|A_i ∩ A_j| for every pair of latents, as a sparse [d_sae, d_sae] tensor, from `active` [tokens, d_sae]
    (bool): one sparse product, so the cost follows the active pairs, not d_sae²."""
    idx = active.nonzero().t()
    ones = torch.ones(idx.shape[1], dtype=torch.float32, device=active.device)
    a = torch.sparse_coo_tensor(idx, ones, tuple(active.shape), check_invariants=False).coalesce()
    with warnings.catch_warnings():  # torch announces its sparse CSR support as beta on first use
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse.mm(a.t().coalesce(), a).coalesce()


@torch.no_grad()
def split_pairs(latents: torch.Tensor, jaccard: float, min_cofire: int = MIN_COFIRE,
                min_correlation: float = MIN_CORRELATION) -> torch.Tensor:
    """The pairs (i, j), i < j, of `latents` [tokens, d_sae] (the codes) that fire together on at least `min_cofire`
    tokens with J(i, j) ≥ `jaccard` and whose codes on those tokens correlate at ≥ `min_correlation`, as a [k, 2]
    long tensor; greedy by J (highest first) so that each latent is in at most one pair."""
    active = latents > 0
    co = cofire_counts(active)
    (i, j), both = co.indices(), co.values()
    counts = active.sum(0, dtype=torch.float32)
    keep = (i < j) & (both >= min_cofire)
    i, j, both = i[keep], j[keep], both[keep]
    score = both / (counts[i] + counts[j] - both)
    keep = score >= jaccard
    i, j, score = i[keep], j[keep], score[keep]
    keep = code_correlation(latents, i, j) >= min_correlation
    i, j, score = i[keep], j[keep], score[keep]
    taken: set[int] = set()
    pairs = []
    for k in score.argsort(descending=True, stable=True).tolist():
        a, b = int(i[k]), int(j[k])
        if a not in taken and b not in taken:
            taken.update((a, b))
            pairs.append((a, b))
    return torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)


def code_correlation(latents: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """Pearson's r between the codes of latents i[k] and j[k] over the tokens where both fire (0 where it is
    undefined: fewer than two such tokens, or a code that does not vary)."""
    a, b = latents[:, i].float(), latents[:, j].float()
    both = ((a > 0) & (b > 0)).float()
    n = both.sum(0).clamp_min(1.0)
    ma, mb = (a * both).sum(0) / n, (b * both).sum(0) / n
    da, db = (a - ma) * both, (b - mb) * both
    cov, va, vb = (da * db).sum(0), da.pow(2).sum(0), db.pow(2).sum(0)
    r = cov / (va * vb).sqrt().clamp_min(1e-30)
    return torch.where((both.sum(0) >= 2) & (va > 0) & (vb > 0), r, torch.zeros_like(r))


@torch.no_grad()
def weaker_latents(pairs: torch.Tensor, latents: torch.Tensor, sae: JumpReLUSAE) -> torch.Tensor:
    """For each pair, the latent that contributes less to the batch's reconstruction (Σ_t f_ti · ‖W_dec,i‖); ties
    go to the higher index."""
    if pairs.numel() == 0:
        return pairs.new_zeros(0)
    pairs = pairs.to(latents.device)
    weight = latents.float().sum(0) * sae.W_dec.float().norm(dim=1)
    first_weaker = weight[pairs[:, 0]] < weight[pairs[:, 1]]
    return torch.where(first_weaker, pairs[:, 0], pairs[:, 1])


@torch.no_grad()
def draw_tokens(errors: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """`n` distinct rows of `errors` [tokens, d_in] (x − x̂), drawn with probability ∝ ‖e_t‖²."""
    weights = errors.float().pow(2).sum(1).cpu()
    if n > errors.shape[0] or not bool(torch.isfinite(weights).all()) or int((weights > 0).sum()) < n:
        raise ValueError(f"cannot draw {n} tokens with a reconstruction error from {errors.shape[0]}")
    return torch.multinomial(weights, n, replacement=False, generator=generator).to(errors.device)


@torch.no_grad()
def collapsed_latents(sae: JumpReLUSAE, share: float) -> torch.Tensor:
    """The latents whose gain ‖W_enc,i‖·‖W_dec,i‖ is under `share` × the median gain (module docstring)."""
    gains = sae.W_enc.float().norm(dim=0) * sae.W_dec.float().norm(dim=1)
    return (gains < share * gains.median()).nonzero().squeeze(1)


@torch.no_grad()
def resample_splits(sae: JumpReLUSAE, opt: torch.optim.Optimizer, x: torch.Tensor, x_hat: torch.Tensor,
                    latents: torch.Tensor, jaccard: float, seed: int, dist: DistContext) -> int:
    """Find the split pairs of the batch (`latents` [tokens, d_sae], the training step's) and re-initialise the
    weaker latent of each at a token drawn from ‖x − x̂‖² with a generator seeded by `seed`; returns how many.
    Rank 0 decides and every rank applies the same change (so the replicas stay identical)."""
    return _resample(sae, opt, x, x_hat, lambda: weaker_latents(split_pairs(latents, jaccard), latents, sae),
                     seed, dist, "split", keep_decoder_norm=True)


@torch.no_grad()
def resample_collapsed(sae: JumpReLUSAE, opt: torch.optim.Optimizer, pool: ResidualPool, share: float,
                       dist: DistContext) -> int:
    """Move the collapsed latents (`collapsed_latents`) onto the missing directions of `pool`
    (`missing_directions`), paired by cosine (`match`); returns how many moved. Rank 0 decides from its pool."""
    def plan() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        collapsed = collapsed_latents(sae, share)
        directions, inputs = missing_directions(pool, sae, collapsed, collapsed.numel())
        k, j = match(unit_rows(sae.W_dec.detach()[collapsed].float()).cpu(), directions.cpu())
        return collapsed[k.to(collapsed.device)], directions[j.to(directions.device)], inputs[j.to(inputs.device)]
    return _apply(sae, opt, plan, dist, "collapsed", keep_decoder_norm=False)


def _resample(sae: JumpReLUSAE, opt: torch.optim.Optimizer, x: torch.Tensor, x_hat: torch.Tensor,
              choose: Callable[[], torch.Tensor], seed: int, dist: DistContext, kind: str,
              keep_decoder_norm: bool) -> int:
    """Re-initialise the latents `choose()` names on rank 0 (at most one per token with an error) at tokens drawn
    from ‖x − x̂‖² (`reinitialise_`); every rank applies rank 0's plan."""
    d_in = x.shape[-1]
    x = x.reshape(-1, d_in).float()
    errors = x - x_hat.reshape(-1, d_in).float()

    def plan() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        weak = choose().to(x.device)
        weak = weak[:int((errors.pow(2).sum(1) > 0).sum())]  # at most one latent per token with an error
        if not weak.numel():
            return weak, x.new_zeros(0, d_in), x.new_zeros(0, d_in)
        rows = draw_tokens(errors, weak.numel(), torch.Generator().manual_seed(seed))
        return weak, errors[rows], x[rows]
    return _apply(sae, opt, plan, dist, kind, keep_decoder_norm)


def _apply(sae: JumpReLUSAE, opt: torch.optim.Optimizer,
           plan: Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor]], dist: DistContext, kind: str,
           keep_decoder_norm: bool) -> int:
    """Rank 0 makes the `plan` (latents, the directions they move along, the inputs that set their θ); every rank
    applies it (`reinitialise_`), so the replicas stay identical."""
    d_in, device = sae.cfg.d_in, sae.W_dec.device
    weak = torch.zeros(0, dtype=torch.long, device=device)
    residuals = tokens = torch.zeros(0, d_in, device=device)
    if dist.is_main:
        weak, residuals, tokens = (t.to(device) for t in plan())
        residuals, tokens = residuals.float(), tokens.float()
    if dist.enabled:  # one sum of a plan that is zero on every rank but 0
        spread = torch.zeros(sae.d_sae, 1 + 2 * d_in, device=device)
        spread[weak, 0] = 1.0
        spread[weak, 1:] = torch.cat([residuals, tokens], dim=1)
        spread = dist.all_reduce_sum(spread)
        weak = spread[:, 0].nonzero().squeeze(1)
        residuals, tokens = spread[weak, 1:1 + d_in], spread[weak, 1 + d_in:]
    reinitialise_(sae, opt, weak, residuals, tokens, keep_decoder_norm)
    if weak.numel():
        log.info("re-initialised %d %s latents", weak.numel(), kind)
    return int(weak.numel())


@torch.no_grad()
def reinitialise_(sae: JumpReLUSAE, opt: torch.optim.Optimizer, latents: torch.Tensor, residuals: torch.Tensor,
                  tokens: torch.Tensor, keep_decoder_norm: bool = True) -> None:
    """Move each of `latents` onto its row of `residuals` (raw units) as the module docstring says; `tokens`
    [n, d_in] (raw) are the inputs the residuals were drawn at, which set θ. The decoder rows keep their norms, or
    (`keep_decoder_norm` false: a collapsed latent's row is short) take the others' mean. Adam's state for those
    entries restarts (first moments 0, per-element second moments at their tensor's mean)."""
    if latents.numel() == 0:
        return
    latents = latents.to(sae.device)
    unit = residuals.to(sae.device, sae.dtype)
    unit = unit / unit.norm(dim=1, keepdim=True).clamp_min(1e-12)
    others = torch.ones(sae.d_sae, dtype=torch.bool, device=sae.device)
    others[latents] = False
    some = bool(others.any())  # else (every latent moves) the means are over all of them
    enc_norm = (sae.W_enc[:, others] if some else sae.W_enc).norm(dim=0).mean()
    dec_norm = (sae.W_dec[latents].norm(dim=1, keepdim=True) if keep_decoder_norm
                else (sae.W_dec[others] if some else sae.W_dec).norm(dim=1).mean())
    sae.W_dec[latents] = unit * dec_norm
    sae.W_enc[:, latents] = unit.t() * enc_norm
    sae.b_enc[latents] = 0.0
    pre = sae.pre_acts(tokens.to(sae.device), latents).diagonal()  # b_enc is 0 now: latent k on its token k
    sae.assign_threshold_(latents, (THETA_SHARE * pre).clamp_min(0.0))
    _restart_moments(opt, sae, latents)


def _restart_moments(opt: torch.optim.Optimizer, sae: JumpReLUSAE, latents: torch.Tensor) -> None:
    """Zero Adam's first moments of the latents' entries and set their second moments to the tensor's mean."""
    where = {id(sae.W_enc): (slice(None), latents), id(sae.W_dec): latents, id(sae.b_enc): latents,
             id(sae.threshold_parameter): latents}
    for group in opt.param_groups:
        for p in group["params"]:
            index = where.get(id(p))
            state = opt.state.get(p)
            if index is None or not state:
                continue
            state["exp_avg"][index] = 0.0
            sq = state["exp_avg_sq"]
            if sq.dim():  # per element (a shared θ moment is one scalar and stays)
                sq[index] = sq.mean()
