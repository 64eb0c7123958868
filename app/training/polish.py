"""The polish (--polish-share, docs/training.md thirty-seventh pass): move the decoder's rows to where sparse coding
puts them, then keep them near there.

A JumpReLU encoder is one linear map and a threshold. It infers codes worse than a sparse-coding search does, and the
dictionary it learns bends to make up for that: on planted data its rows settle at max-|cos| 0.82–0.87 when the
planted rows would cost only a few % of FVU. The polish is online dictionary learning (Mairal, Bach, Ponce and Sapiro
2009) with orthogonal matching pursuit as the inference:

- `sparse_omp` codes every token with k rows (Batch-OMP: correlations updated through the rows' Gram matrix, the
  chosen rows' inverse Gram grown by one row a step), optionally choosing only among each token's most correlated
  rows (the screen, used on dictionaries over 1,024 rows: thirty-eighth pass); `omp` returns its codes dense;
- `polish_rows` keeps running statistics A = E[c cᵀ] and B = E[c xᵀ] (summed entry by entry from the sparse codes)
  and after every batch moves each row to its least-squares optimum given the others (`_sweep`); rows no token
  uses and near-duplicates restart at the worst-coded tokens' residuals (`_restart`) over the first ¾ of the
  batches;
- `into_cone` then keeps the JumpReLU SAE's rows within cos c of the polished ones while it trains on.

Everything runs on the tokens' device.
"""

from __future__ import annotations

import logging

import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

DUPLICATE_COS = 0.9  # a row this close to another restarts
ROW_BY_ROW_UP_TO = 1024  # dictionaries up to this many rows sweep row by row; larger ones in blocks of ROW_BLOCK
ROW_BLOCK = 64
SCREEN_PER_K = 8  # the trainer's polish: each token's pursuit chooses among its 8·k most correlated rows ...
SCREEN_ABOVE = 1024  # ... in dictionaries of more rows than this (smaller ones are cheap to search whole)


def omp(x: torch.Tensor, rows: torch.Tensor, k: int, ridge: float = 1e-5, chunk: int = 1024,
        screen: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthogonal matching pursuit for every token at once: k times pick the row most correlated (signed: codes are
    meant to be positive) with the token's residual, then refit the chosen rows' codes by least squares (with a
    tiny ridge). Returns codes [n, n_rows] (k non-zeros per token) and residuals [n, d]; `sparse_omp` returns the
    codes as (row index, value) pairs."""
    index, value, residuals = sparse_omp(x, rows, k, ridge, chunk, screen)
    codes = torch.zeros(x.shape[0], rows.shape[0], dtype=x.dtype, device=x.device)
    return codes.scatter_(1, index, value), residuals


def sparse_omp(x: torch.Tensor, rows: torch.Tensor, k: int, ridge: float = 1e-5, chunk: int = 1024,
               screen: int | None = None, gram: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`omp` with its codes as [n, k] row indices and [n, k] values, and the residuals [n, d].

    Batch-OMP (Rubinstein, Zibulevsky and Elad 2008): the correlations are updated through the Gram matrix G of the
    rows, residual·rowsᵀ = x·rowsᵀ − Σ_j code_j G[j], so a step costs n·t·n_rows instead of n·d·n_rows. `screen`
    rows: each token picks only among the `screen` rows most correlated with it, so a step costs n·t·screen (None
    or ≥ n_rows: among all). Tokens go `chunk` at a time (G's chosen rows: chunk·k·screen floats). `gram`: G, when
    the caller has it already."""
    n_rows = rows.shape[0]
    if k < 1 or k > n_rows:
        raise ValueError(f"k must be in [1, {n_rows}], got {k}")
    width = n_rows if screen is None else min(screen, n_rows)
    if width < k:
        raise ValueError(f"screen must keep at least k = {k} rows, got {screen}")
    if gram is None:
        gram = rows @ rows.T
    flat_gram = gram.reshape(-1)
    index = torch.empty(x.shape[0], k, dtype=torch.long, device=x.device)
    value = torch.empty(x.shape[0], k, dtype=x.dtype, device=x.device)
    residuals = torch.empty_like(x)
    for at in range(0, x.shape[0], chunk):
        xs = x[at:at + chunk]
        m = xs.shape[0]
        start = xs @ rows.T  # x·rowsᵀ
        pool = None  # each token's candidate rows, in row order (G is read a row at a time)
        if width < n_rows:
            pool = start.topk(width, dim=1).indices.sort(dim=1).values
            start = start.gather(1, pool)
        corr = start.clone()
        chosen = torch.empty(m, k, dtype=torch.long, device=x.device)  # positions among the candidates
        g_chosen = torch.empty(m, k, width, dtype=x.dtype, device=x.device)  # G[chosen row, candidates]
        inverse = torch.zeros(m, k, k, dtype=x.dtype, device=x.device)  # (G among the chosen + ridge)⁻¹
        for t in range(k):
            if t:
                corr.scatter_(1, chosen[:, :t], float("-inf"))
            pick = corr.argmax(dim=1, keepdim=True)
            chosen[:, t:t + 1] = pick
            if pool is None:
                g_chosen[:, t] = gram[pick.squeeze(1)]
            else:  # G[the row picked, the token's candidates], read straight from G's storage
                g_chosen[:, t] = flat_gram[pool.gather(1, pick) * n_rows + pool]
            _grow_inverse(inverse, t, g_chosen[:, t].gather(1, chosen[:, :t + 1]), ridge)
            coef = inverse[:, :t + 1, :t + 1] @ start.gather(1, chosen[:, :t + 1]).unsqueeze(2)
            corr = start - (coef.transpose(1, 2) @ g_chosen[:, :t + 1]).squeeze(1)
        picked = chosen if pool is None else pool.gather(1, chosen)
        index[at:at + chunk], value[at:at + chunk] = picked, coef.squeeze(2)
        residuals[at:at + chunk] = xs - (coef.transpose(1, 2) @ rows[picked]).squeeze(1)
    return index, value, residuals


def _grow_inverse(inverse: torch.Tensor, t: int, g: torch.Tensor, ridge: float) -> None:
    """Grow (G_S + ridge·I)⁻¹, held in inverse[:, :t, :t], by the row just chosen, whose Gram entries with the chosen
    rows and itself are g [m, t + 1] (block inversion by the Schur complement s = g_tt + ridge − gᵀ(G_S)⁻¹g, the
    squared length of the new row's part outside the span of the chosen ones, plus the ridge)."""
    if t == 0:
        inverse[:, 0, 0] = 1.0 / (g[:, 0] + ridge)
        return
    old, new = inverse[:, :t, :t], g[:, :t].unsqueeze(2)
    u = old @ new  # [m, t, 1]
    s = (g[:, t] + ridge - (new.transpose(1, 2) @ u).squeeze(2).squeeze(1)).clamp_min(1e-12).view(-1, 1, 1)
    old += u @ u.transpose(1, 2) / s
    inverse[:, :t, t:t + 1] = -u / s
    inverse[:, t:t + 1, :t] = -u.transpose(1, 2) / s
    inverse[:, t, t] = 1.0 / s.view(-1)


def screen_for(n_rows: int, k: int) -> int | None:
    """The screen the trainer's polish uses: 8·k rows for dictionaries over 1,024 rows, else none. Measured in the
    thirty-eighth pass: on SmolLM2 (4,096 rows, k 32) the polish ran 3.3–3.5× faster than before for 0.9 % more
    held-out pursuit FVU; at d = 64 on s8h (512 rows, k 7) the screen lost 0.02 of the polished rows' max-|cos|, so
    small dictionaries are searched whole."""
    return SCREEN_PER_K * k if n_rows > SCREEN_ABOVE else None


def polish_rows(rows: torch.Tensor, x: torch.Tensor, k: int, epochs: int, batch: int = 4096, seed: int = 0,
                forget: float = 0.99, restart_share: float = 0.75, block: int | None = None,
                screen: int | None = None, progress: bool = False) -> torch.Tensor:
    """Online dictionary learning from `rows` [n_rows, d] on the tokens `x` [n, d], coded by `sparse_omp` with k rows
    per token; returns unit rows. `forget` is the running statistics' decay per batch. Unused and duplicate rows
    restart only over the first `restart_share` of the batches: a row restarted late would end as one token's
    residual, a latent nothing else uses. `block` rows update together (1: one row at a time, Mairal's sweep;
    default: 1 up to ROW_BY_ROW_UP_TO rows, else ROW_BLOCK). `screen`: as in `sparse_omp`."""
    if epochs < 0 or batch < 1 or x.shape[0] < batch:
        raise ValueError(f"the polish needs epochs >= 0 and at least one batch of {batch} tokens, got "
                         f"{x.shape[0]} tokens and {epochs} epochs")
    if block is None:
        block = 1 if rows.shape[0] <= ROW_BY_ROW_UP_TO else ROW_BLOCK
    g = torch.Generator().manual_seed(seed)
    d_rows = rows.to(x)
    d_rows = d_rows / d_rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
    n_rows = d_rows.shape[0]
    a = torch.zeros(n_rows, n_rows, dtype=x.dtype, device=x.device)
    b = torch.zeros(n_rows, x.shape[1], dtype=x.dtype, device=x.device)
    per_epoch = len(range(0, x.shape[0] - batch + 1, batch))
    restart_until, done = int(restart_share * epochs * per_epoch), 0
    bar = tqdm(total=epochs * per_epoch, disable=not progress, desc="polish", unit="batch", dynamic_ncols=True)
    gram = None
    for epoch in range(epochs):
        perm = torch.randperm(x.shape[0], generator=g).to(x.device)
        fvu = x.new_zeros(())  # summed on the device: no host sync per batch
        for start in range(0, x.shape[0] - batch + 1, batch):
            xb = x[perm[start:start + batch]]
            index, value, residual = sparse_omp(xb, d_rows, k, screen=screen, gram=gram)
            fvu += residual.pow(2).sum() / xb.pow(2).sum()
            _accumulate(a, b, index, value, xb, forget, 1.0 / batch)
            _sweep(d_rows, a, b, block)
            gram = None  # the rows moved
            if done < restart_until:
                gram = d_rows @ d_rows.T  # the restart's cosines, and the next pursuit's G unless a row restarts
                if _restart(d_rows, a, b, xb, residual, gram):
                    gram = None
            done += 1
            bar.update(1)
        log.info("polish epoch %d: matching-pursuit FVU %.4f", epoch, fvu.item() / per_epoch)
    bar.close()
    return d_rows


def _accumulate(a: torch.Tensor, b: torch.Tensor, index: torch.Tensor, value: torch.Tensor, xb: torch.Tensor,
                forget: float, scale: float, chunk: int = 1024) -> None:
    """A ← forget·A + scale·cᵀc and B ← forget·B + scale·cᵀx for the batch's sparse codes c (`index`, `value` [n, k]),
    written entry by entry: k² and k·d terms a token instead of the dense n_rows² and n_rows·d."""
    k = index.shape[1]
    a.mul_(forget)
    b.mul_(forget)
    for at in range(0, index.shape[0], chunk):
        i, v, x = index[at:at + chunk], value[at:at + chunk], xb[at:at + chunk]
        rows_i = i.unsqueeze(2).expand(-1, k, k).reshape(-1)
        cols_i = i.unsqueeze(1).expand(-1, k, k).reshape(-1)
        a.index_put_((rows_i, cols_i), (v.unsqueeze(2) * v.unsqueeze(1) * scale).reshape(-1),
                    accumulate=True)
        b.index_add_(0, i.reshape(-1), (v.unsqueeze(2) * scale * x.unsqueeze(1)).reshape(-1, x.shape[1]))


def _sweep(rows: torch.Tensor, a: torch.Tensor, b: torch.Tensor, block: int) -> None:
    """One block-coordinate sweep over the rows, `block` at a time (Gauss–Seidel between blocks: each block sees the
    blocks before it), each row moved to its least-squares optimum given the others, then back to unit norm."""
    diag = a.diagonal()
    if block == 1:  # row by row (the thirty-fifth pass's figures; a block of one rounds differently)
        for j in range(rows.shape[0]):
            if diag[j] > 1e-6:
                row = rows[j] + (b[j] - a[j] @ rows) / diag[j]
                rows[j] = row / row.norm().clamp_min(1e-12)
        return
    for j in range(0, rows.shape[0], block):
        at = slice(j, j + block)
        used = (diag[at] > 1e-6).unsqueeze(1)
        step = rows[at] + (b[at] - a[at] @ rows) / diag[at].clamp_min(1e-6).unsqueeze(1)
        step = step / step.norm(dim=1, keepdim=True).clamp_min(1e-12)
        rows[at] = torch.where(used, step, rows[at])


def _restart(rows: torch.Tensor, a: torch.Tensor, b: torch.Tensor, xb: torch.Tensor, residual: torch.Tensor,
             gram: torch.Tensor) -> bool:
    """Rows no token used and rows within DUPLICATE_COS of another (by their Gram matrix `gram`) restart at the
    worst-coded tokens' residuals. Returns whether any did."""
    diag = a.diagonal()
    unused = diag < 1e-4 * diag.mean()
    cos = gram.abs().triu(1)
    again = torch.nonzero(unused | (cos.max(0).values > DUPLICATE_COS)).squeeze(1)
    if not len(again):
        return False
    worst = residual.norm(dim=1).topk(min(len(again), xb.shape[0])).indices
    again = again[:len(worst)]
    rows[again] = residual[worst] / residual[worst].norm(dim=1, keepdim=True).clamp_min(1e-12)
    a[again] = 0
    a[:, again] = 0
    b[again] = 0
    return True


@torch.no_grad()
def into_cone(w: torch.Tensor, centre: torch.Tensor, cos: float) -> None:
    """Move every row of `w` [n, d] whose direction is further than `cos` from its row of `centre` [n, d] (unit rows)
    onto the cone's edge, in place: within the plane of the row and its centre, at cos exactly `cos`, norm kept.
    Rows inside the cone are untouched."""
    norm = w.norm(dim=1, keepdim=True).clamp_min(1e-12)
    u = w / norm
    along = (u * centre).sum(dim=1, keepdim=True)
    side = u - along * centre
    side = side / side.norm(dim=1, keepdim=True).clamp_min(1e-12)
    edge = cos * centre + (1.0 - cos * cos) ** 0.5 * side
    w.copy_(torch.where(along < cos, edge * norm, w))
