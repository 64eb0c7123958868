"""SAE activations for the index: latent-chunked encoding, the skip mask, and corpus rows by number."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch

from app.index.config import IndexConfig
from app.index.theta_window import window_prefilter
from app.lm.corpus import iter_contexts, iter_texts
from app.lm.model import LanguageModel
from app.lm.outliers import keep_mask, reference_norm  # noqa: F401  (the shared rule; builder/examples use it)
from app.sae.jumprelu import JumpReLUSAE


def prepare_input(sae: JumpReLUSAE, h: torch.Tensor) -> torch.Tensor:
    """x as the encoder's matmul sees it (input scale and, for SAELens folders, x − b_dec), in the SAE dtype."""
    x = h.to(sae.dtype) * sae.input_scale
    return x - sae.b_dec if sae.cfg.apply_b_dec_to_input else x


@contextmanager
def bookkeeping_threads(device: torch.device | str) -> Iterator[None]:
    """Run the many small element-wise ops of the index on one CPU thread (no-op on a GPU).

    With several intra-op threads, every op waits until all of them got a time slice; on a loaded shared
    machine that made the collector 5–10× slower than on one thread (benchmarks/index_throughput.py), while
    these memory-bound ops gain little from a second thread on an idle one. Matmuls keep every thread.
    """
    n = torch.get_num_threads()
    if torch.device(device).type != "cpu" or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class ActiveEntries(NamedTuple):
    """The active (position, latent) pairs of an [N, C] block of activations, in row-major order."""

    token: torch.Tensor  # int64 [E] row of the block (index into the batch's positions)
    latent: torch.Tensor  # int64 [E] column of the block (latent offset within the chunk)
    value: torch.Tensor  # float32 [E] activation (> 0)
    n_latents: int  # C, the chunk width


def _entries(active: torch.Tensor, values: torch.Tensor) -> ActiveEntries:
    n_lat = active.shape[1]
    flat = active.view(-1).nonzero().squeeze(1)  # one scan of the [N, C] mask
    return ActiveEntries(flat // n_lat, flat % n_lat, values.reshape(-1).index_select(0, flat).float(), n_lat)


def active_entries(acts: torch.Tensor) -> ActiveEntries:
    """The entries > 0 of dense activations [N, C]."""
    return _entries(acts > 0, acts)


def encode_chunk(sae: JumpReLUSAE, x: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """JumpReLU activations of latents lo..hi for prepared inputs x [N, d_in] (same math as sae.encode)."""
    pre = torch.addmm(sae.b_enc[lo:hi], x, sae.W_enc[:, lo:hi])
    return pre.masked_fill_(pre <= sae.threshold[lo:hi], 0.0)


def encode_active(sae: JumpReLUSAE, x: torch.Tensor, lo: int, hi: int) -> ActiveEntries:
    """The active entries of latents lo..hi for prepared inputs x [N, d_in], without a dense masked copy."""
    pre = torch.addmm(sae.b_enc[lo:hi], x, sae.W_enc[:, lo:hi])
    with bookkeeping_threads(pre.device):
        return _entries(pre > sae.threshold[lo:hi], pre)


def encode_window(sae: JumpReLUSAE, x: torch.Tensor, lo: int, hi: int, cfg: IndexConfig
                  ) -> tuple[ActiveEntries, ActiveEntries]:
    """(active entries, below-θ window entries) of latents lo..hi from one encoder matmul.

    The second set holds the inactive (position, latent) pairs whose pre-activation may lie in the window
    below θ (a superset, see theta_window.window_prefilter); its values are the pre-activations.
    """
    pre = torch.addmm(sae.b_enc[lo:hi], x, sae.W_enc[:, lo:hi])
    theta = sae.threshold[lo:hi]
    with bookkeeping_threads(pre.device):
        return _entries(pre > theta, pre), _entries(window_prefilter(pre, theta, cfg), pre)


def encode_pairs(sae: JumpReLUSAE, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """Activation of one latent per leading row: x [E, L, d_in] prepared, latents [E] → [E, L]."""
    pre = torch.einsum("eld,de->el", x, sae.W_enc[:, latents]) + sae.b_enc[latents].unsqueeze(1)
    return pre * (pre > sae.threshold[latents].unsqueeze(1))


def corpus_rows(lm: LanguageModel, corpus: str | os.PathLike, context_size: int, start: int = 0,
                stop: int | None = None) -> Iterator[list[int]]:
    """Packed rows start..stop of the corpus, in its fixed order (re-tokenising what comes before)."""
    rows = iter_contexts(lm, iter_texts(corpus), context_size)
    return itertools.islice(rows, start, stop)


def fetch_rows(lm: LanguageModel, corpus: str | os.PathLike, context_size: int,
               wanted: Iterable[int], on_progress: Callable[[int], None] | None = None) -> dict[int, list[int]]:
    """Token ids of the wanted rows (one streaming read of the corpus up to the last of them).

    `on_progress(1)` is called after each row read.
    """
    want = set(int(r) for r in wanted)
    out: dict[int, list[int]] = {}
    if not want:
        return out
    for r, row in enumerate(corpus_rows(lm, corpus, context_size, 0, max(want) + 1)):
        if r in want:
            out[r] = row
        if on_progress is not None:
            on_progress(1)
    missing = want - out.keys()
    if missing:
        raise ValueError(f"corpus {corpus} changed: rows {sorted(missing)[:5]} … are gone")
    return out
