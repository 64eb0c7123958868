"""SAE activations for the index: latent-chunked encoding, the skip mask, and corpus rows by number."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator

import torch

from app.lm.corpus import iter_contexts, iter_texts
from app.lm.model import LanguageModel
from app.sae.jumprelu import JumpReLUSAE


def prepare_input(sae: JumpReLUSAE, h: torch.Tensor) -> torch.Tensor:
    """x as the encoder's matmul sees it (input scale and, for SAELens folders, x − b_dec), in the SAE dtype."""
    x = h.to(sae.dtype) * sae.input_scale
    return x - sae.b_dec if sae.cfg.apply_b_dec_to_input else x


def encode_chunk(sae: JumpReLUSAE, x: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """JumpReLU activations of latents lo..hi for prepared inputs x [N, d_in] (same math as sae.encode)."""
    pre = x @ sae.W_enc[:, lo:hi] + sae.b_enc[lo:hi]
    return pre * (pre > sae.threshold[lo:hi])


def encode_pairs(sae: JumpReLUSAE, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """Activation of one latent per leading row: x [E, L, d_in] prepared, latents [E] → [E, L]."""
    pre = torch.einsum("eld,de->el", x, sae.W_enc[:, latents]) + sae.b_enc[latents].unsqueeze(1)
    return pre * (pre > sae.threshold[latents].unsqueeze(1))


def reference_norm(lm: LanguageModel, ids: torch.Tensor, h: torch.Tensor) -> float:
    """Median activation norm over the non-special positions of a batch (the outlier yardstick)."""
    keep = ~lm.special_mask(ids.to(h.device))
    norms = h.float().norm(dim=-1)[keep]
    return float(norms.median()) if norms.numel() else 0.0


def keep_mask(lm: LanguageModel, ids: torch.Tensor, h: torch.Tensor, outlier_factor: float,
              norm_ref: float | None) -> torch.Tensor:
    """[B, T] True where a position enters the statistics: not special, and not an outlier-norm position."""
    keep = ~lm.special_mask(ids.to(h.device))
    if outlier_factor > 0 and norm_ref:
        keep &= h.float().norm(dim=-1) <= outlier_factor * norm_ref
    return keep


def corpus_rows(lm: LanguageModel, corpus: str | os.PathLike, context_size: int, start: int = 0,
                stop: int | None = None) -> Iterator[list[int]]:
    """Packed rows start..stop of the corpus, in its fixed order (re-tokenising what comes before)."""
    rows = iter_contexts(lm, iter_texts(corpus), context_size)
    return itertools.islice(rows, start, stop)


def fetch_rows(lm: LanguageModel, corpus: str | os.PathLike, context_size: int,
               wanted: Iterable[int]) -> dict[int, list[int]]:
    """Token ids of the wanted rows (one streaming read of the corpus up to the last of them)."""
    want = set(int(r) for r in wanted)
    out: dict[int, list[int]] = {}
    if not want:
        return out
    for r, row in enumerate(corpus_rows(lm, corpus, context_size, 0, max(want) + 1)):
        if r in want:
            out[r] = row
    missing = want - out.keys()
    if missing:
        raise ValueError(f"corpus {corpus} changed: rows {sorted(missing)[:5]} … are gone")
    return out
