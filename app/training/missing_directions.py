"""Directions the dictionary misses, read off its residuals: where collapsed latents go (--collapse-share).

Where no latent holds a direction d_k, every token on which it fires leaves it in the residual e_t = x_t − x̂_t
(e_t ≈ a_t·d_k plus the rest of the token's error), so the residuals of those tokens point the same way while the
rest of the error scatters. A pool of the largest residuals of the last POOL_STEPS steps before a check is
clustered greedily:

    seed    the residual with the most others at cos ≥ TAU (at least MIN_MEMBERS − 1 of them);
    centre  c ∝ Σ e_t over the residuals at cos ≥ TAU to the seed, then REFINE times over those at cos ≥ TAU to c
            (a mean shift: a centre first drawn between two directions moves onto one of them);
    then every residual taken by the cluster leaves the pool, and the next seed is drawn.

A centre is a missing direction when it is (a) supported: at least MIN_SUPPORT residuals of the pool lie at
cos ≥ SUPPORT_COS to it (a centre that sits between directions has residuals near it but few close to it), and
(b) new: after the NOVELTY_ROWS decoder rows of the other latents that explain it best (orthogonal matching
pursuit) its residual keeps a norm ≥ NOVELTY (a mixture of latents the dictionary has already is not missing).
The most novel come first. On planted data (docs/training.md, thirty-second pass) 64–80 % (s4c) and 99 % (s16n)
of the supported centres lie within 0.8 |cos| of a planted direction, against 8–63 % of all centres at TAU 0.3.
"""

from __future__ import annotations

import torch

from app.sae import JumpReLUSAE

POOL_STEPS = 16  # steps before each check whose residuals are pooled
POOL_TOP = 512  # residuals pooled per step: the step's largest ‖x − x̂‖²
TAU = 0.5  # cosine at which two residuals count as the same direction
MIN_MEMBERS = 4  # residuals a seed needs (itself included) before it starts a cluster
REFINE = 2  # mean-shift passes of a centre
SUPPORT_COS, MIN_SUPPORT = 0.7, 3  # (a) supported: this many residuals of the pool this close to the centre
NOVELTY_ROWS, NOVELTY = 3, 0.7  # (b) new: the norm left after this many other latents' decoder rows
BLOCK = 1024  # rows of the pool's cosine matrix computed at a time (`near_pairs`)


def pools_at(step: int, every: int, first: int, end: int) -> bool:
    """Whether `step` is one of the POOL_STEPS steps up to and including a check; checks fall on the steps s with
    (s + 1) % every == 0 and first ≤ s < end (the split check's cadence, app/training/resample.py)."""
    check = step + (-(step + 1)) % every  # the next step of the cadence ...
    if check < first:  # ... or the first one that is a check
        check += -(-(first - check) // every) * every
    return check - step < POOL_STEPS and check < end


class ResidualPool:
    """The POOL_TOP largest residuals of each of the last POOL_STEPS steps and the inputs they came from."""

    def __init__(self) -> None:
        self.residuals: list[torch.Tensor] = []
        self.inputs: list[torch.Tensor] = []

    @torch.no_grad()
    def add(self, x: torch.Tensor, x_hat: torch.Tensor) -> None:
        """Pool the step's largest residuals (`x`, `x_hat` [..., d_in], the SAE's input space)."""
        d_in = x.shape[-1]
        x = x.reshape(-1, d_in).float()
        e = x - x_hat.reshape(-1, d_in).float()
        top = e.pow(2).sum(1).topk(min(POOL_TOP, e.shape[0])).indices
        self.residuals = [*self.residuals, e[top]][-POOL_STEPS:]
        self.inputs = [*self.inputs, x[top]][-POOL_STEPS:]

    def clear(self) -> None:
        self.residuals, self.inputs = [], []

    def tensors(self) -> dict[str, torch.Tensor]:
        """The pool for a checkpoint (a resume inside the pooling window draws the same clusters)."""
        if not self.residuals:
            return {}
        sizes = torch.tensor([len(r) for r in self.residuals], dtype=torch.long)
        return {"residuals": torch.cat(self.residuals), "inputs": torch.cat(self.inputs), "sizes": sizes}

    def load(self, tensors: dict[str, torch.Tensor], device: torch.device | str) -> None:
        """Inverse of `tensors` (an empty dict clears the pool)."""
        self.clear()
        if tensors:
            sizes = tensors["sizes"].tolist()
            self.residuals = list(tensors["residuals"].to(device).split(sizes))
            self.inputs = list(tensors["inputs"].to(device).split(sizes))


def unit_rows(v: torch.Tensor) -> torch.Tensor:
    """`v` with each row (last dimension) scaled to unit norm; zero rows stay zero."""
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def near_pairs(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For unit rows `u` [n, d]: (near [n, n], near[i, j] = u_i·u_j ≥ TAU; counts [n], its row sums). Each pair's
    cosine is computed once, a BLOCK of rows against the rows from there on, and written to both places, so `near`
    is symmetric to the last bit (a row holds what a column does) at half a full Gram matrix's cost."""
    n = u.shape[0]
    near = torch.empty(n, n, dtype=torch.bool, device=u.device)
    counts = torch.zeros(n, dtype=torch.long, device=u.device)
    for i in range(0, n, BLOCK):
        j = min(i + BLOCK, n)
        block = (u[i:j] @ u[i:].t()) >= TAU  # [j − i, n − i]: rows i..j against rows i..n
        own = block[:, :j - i]
        own &= own.t().clone()  # the diagonal block holds both orders of its pairs: keep them equal
        near[i:j, i:] = block
        near[j:, i:j] = block[:, j - i:].t()
        counts[i:j] += block.sum(1)
        counts[j:] += block[:, j - i:].sum(0)
    return near, counts


@torch.no_grad()
def residual_clusters(residuals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The greedy clusters of the module docstring: (unit centres [k, d], index of each cluster's seed)."""
    u = unit_rows(residuals.float())
    near, counts = near_pairs(u)
    free = torch.ones(u.shape[0], dtype=torch.bool, device=u.device)
    centres, seeds = [], []
    while True:
        seed = int(torch.where(free, counts, torch.zeros_like(counts)).argmax())
        if not bool(free[seed]) or int(counts[seed]) < MIN_MEMBERS:
            break
        taken = near[seed] & free
        centre = unit_rows(residuals[taken].float().sum(0))
        for _ in range(REFINE):
            members = free & ((u @ centre) >= TAU)
            if not bool(members.any()):
                break
            centre = unit_rows(residuals[members].float().sum(0))
            taken |= members
        centres.append(centre)
        seeds.append(seed)
        free &= ~taken
        counts = counts - near[taken].sum(0)
    if not centres:
        return residuals.new_zeros(0, residuals.shape[1]), torch.zeros(0, dtype=torch.long, device=u.device)
    return torch.stack(centres), torch.tensor(seeds, dtype=torch.long, device=u.device)


@torch.no_grad()
def support(residuals: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Per unit centre, how many `residuals` lie at cos ≥ SUPPORT_COS to it."""
    return ((unit_rows(residuals.float()) @ centres.float().t()) >= SUPPORT_COS).sum(0)


@torch.no_grad()
def novelty(centres: torch.Tensor, rows: torch.Tensor, n_rows: int = NOVELTY_ROWS) -> torch.Tensor:
    """Per unit centre, the norm of what is left after projecting it on the `n_rows` unit `rows` that orthogonal
    matching pursuit picks for it (1 = orthogonal to every row, 0 = in the span of n_rows of them)."""
    c = centres.float()
    if rows.shape[0] == 0 or c.shape[0] == 0:
        return torch.ones(c.shape[0], device=c.device)
    left, picked = c, c.new_zeros(c.shape[0], 0, dtype=torch.long)
    for _ in range(min(n_rows, rows.shape[0])):  # every centre at once: [k, ...]
        picked = torch.cat([picked, (left @ rows.t()).abs().argmax(1, keepdim=True)], dim=1)
        basis = rows[picked].transpose(1, 2)  # [k, d, t]
        left = c - (basis @ torch.linalg.lstsq(basis, c.unsqueeze(2)).solution).squeeze(2)
    return left.norm(dim=1)


@torch.no_grad()
def missing_directions(pool: ResidualPool, sae: JumpReLUSAE, moving: torch.Tensor,
                       limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to `limit` missing directions in the pool, most novel first, judged against the decoder rows of the
    latents not in `moving` (those about to move): (unit directions [k, d_in], the pooled input each cluster was
    seeded at [k, d_in])."""
    if not pool.residuals or limit <= 0:
        return torch.zeros(0, sae.cfg.d_in), torch.zeros(0, sae.cfg.d_in)
    residuals, inputs = torch.cat(pool.residuals), torch.cat(pool.inputs)
    centres, seeds = residual_clusters(residuals)
    if centres.shape[0] == 0:
        return centres, centres
    ok = support(residuals, centres) >= MIN_SUPPORT
    centres, seeds = centres[ok], seeds[ok]
    staying = torch.ones(sae.d_sae, dtype=torch.bool, device=sae.W_dec.device)
    staying[moving] = False
    new = novelty(centres, unit_rows(sae.W_dec.detach().float()[staying]).to(centres.device))
    keep = (new >= NOVELTY).nonzero().squeeze(1)
    keep = keep[new[keep].argsort(descending=True, stable=True)][:limit]
    return centres[keep], inputs[seeds[keep]]


@torch.no_grad()
def match(rows: torch.Tensor, directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs (latent k, direction j) of unit `rows` [m, d] and unit `directions` [n, d], greedy by cosine (highest
    first), each once, min(m, n) pairs: a collapsed latent already near a missing direction takes that one."""
    m, n = rows.shape[0], directions.shape[0]
    if m == 0 or n == 0:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    order = (rows.float() @ directions.float().t()).flatten().argsort(descending=True, stable=True).tolist()
    used_rows, used_dirs, pairs = set(), set(), []
    for flat in order:
        k, j = divmod(flat, n)
        if k not in used_rows and j not in used_dirs:
            used_rows.add(k)
            used_dirs.add(j)
            pairs.append((k, j))
            if len(pairs) == min(m, n):
                break
    ks, js = zip(*pairs, strict=True)
    return torch.tensor(ks, dtype=torch.long), torch.tensor(js, dtype=torch.long)
