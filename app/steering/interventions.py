"""Latent interventions at the SAE's hook point (SPEC §4).

With f = encode(h) and d_i = W_dec[i] (in raw activation units):
  clamp(i, c):  h ← h + (c − f_i(h)) · d_i      the latent is pinned to c, the SAE error term is kept
  add(i, s):    h ← h + s · d_i / ‖d_i‖
  ablate(i):    clamp(i, 0)
Several interventions combine additively, every f_i read from the unmodified h (so the result equals the
SAE reconstruction with the edited latents, plus the original error term).

Across layers: each intervention may name its SAE (`Intervention.sae`, a key of the caller's SAE set; None =
the set's first SAE). `steering_hooks` gives one hook edit per hook point; SAEs sharing a hook point each read
the unmodified h there and their edits add up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from app.lm.hooks import InterventionFn, hook_name, hook_of
from app.sae.errors import UnknownLatent
from app.sae.jumprelu import JumpReLUSAE

Mode = Literal["clamp", "add", "ablate"]
MODES: tuple[str, ...] = ("clamp", "add", "ablate")


@dataclass(frozen=True)
class Intervention:
    """One edit of one latent: clamp to `value`, add `value` along its unit decoder direction, or ablate."""

    latent: int  # latent index, 0..d_sae-1
    mode: str = "clamp"  # one of MODES
    value: float = 0.0  # clamp target c, or add strength s (ignored for ablate)
    sae: str | None = None  # which SAE of the caller's set (None: its first SAE)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown intervention mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if not isinstance(self.latent, int) or self.latent < 0:
            raise ValueError(f"latent must be a non-negative integer, got {self.latent!r}")
        if self.value != self.value or abs(self.value) == float("inf"):
            raise ValueError(f"intervention value must be finite, got {self.value!r}")


SAEs = JumpReLUSAE | Mapping[str, JumpReLUSAE]  # one SAE, or a set keyed by the names interventions use


def sae_set(saes: SAEs) -> dict[str, JumpReLUSAE]:
    """The SAE set as a dict (one SAE is the set {"sae": it}); ValueError when it is empty."""
    out = {"sae": saes} if isinstance(saes, JumpReLUSAE) else dict(saes)
    if not out:
        raise ValueError("choose at least one SAE")
    return out


def group_by_sae(saes: SAEs, interventions: Sequence[Intervention]) -> dict[str, list[Intervention]]:
    """The interventions per SAE key (None → the first SAE), in order. ValueError for a key not in the set."""
    found = sae_set(saes)
    default = next(iter(found))
    groups: dict[str, list[Intervention]] = {}
    for iv in interventions:
        key = default if iv.sae is None else iv.sae
        if key not in found:
            raise ValueError(f"an intervention names SAE {key!r}, which is not loaded here; "
                             f"choose one of {', '.join(found)}")
        groups.setdefault(key, []).append(iv)
    return groups


def check_interventions(saes: SAEs, interventions: Sequence[Intervention]) -> None:
    """Raise UnknownLatent for an out-of-range latent, ValueError when a latent of one SAE is edited twice
    (or an intervention names an SAE outside the set)."""
    found = sae_set(saes)
    for key, group in group_by_sae(found, interventions).items():
        d_sae, seen = found[key].d_sae, set()
        where = "" if len(found) == 1 else f" of SAE {key!r}"
        for iv in group:
            if iv.latent >= d_sae:
                raise UnknownLatent(f"latent {iv.latent}{where} does not exist: this SAE has latents 0..{d_sae - 1}")
            if iv.latent in seen:
                raise ValueError(f"latent {iv.latent}{where} appears in more than one intervention; give it once")
            seen.add(iv.latent)


def decoder_directions(sae: JumpReLUSAE, latents: Sequence[int]) -> torch.Tensor:
    """d_i = W_dec[i] in raw activation units, [n, d_in] (decode divides by input_scale, 1 once folded)."""
    idx = torch.as_tensor(list(latents), dtype=torch.long, device=sae.device)
    return sae.W_dec.detach()[idx] / sae.input_scale


@torch.no_grad()
def apply_interventions(
    h: torch.Tensor, sae: JumpReLUSAE, interventions: Sequence[Intervention]
) -> torch.Tensor:
    """h [..., d_in] with every intervention applied at every position (callers choose the positions)."""
    if not interventions:
        return h
    return h + intervention_delta(h, sae, interventions).to(h.dtype)


@torch.no_grad()
def intervention_delta(h: torch.Tensor, sae: JumpReLUSAE, interventions: Sequence[Intervention]) -> torch.Tensor:
    """What the interventions add to h [..., d_in] (in the SAE's dtype), every f_i read from h itself."""
    latents = [iv.latent for iv in interventions]
    d = decoder_directions(sae, latents)  # [n, d_in]
    x = h.to(sae.dtype)
    coef = torch.zeros((*x.shape[:-1], len(latents)), dtype=sae.dtype, device=x.device)  # [..., n]
    needs_f = any(iv.mode != "add" for iv in interventions)
    if needs_f:
        pre = sae.pre_acts(x)[..., latents]
        theta = sae.threshold.detach()[latents]
        f = pre * (pre > theta)  # JumpReLU of the selected latents
    for j, iv in enumerate(interventions):
        if iv.mode == "add":
            coef[..., j] = iv.value / d[j].norm().clamp_min(1e-12)
        else:
            target = 0.0 if iv.mode == "ablate" else iv.value
            coef[..., j] = target - f[..., j]
    return coef @ d  # [..., d_in]


def steering_hook(
    sae: JumpReLUSAE,
    interventions: Sequence[Intervention],
    protect_prefix: int = 1,
    rows: slice | None = None,
) -> InterventionFn:
    """An `intervene` callback: edit positions at absolute index ≥ `protect_prefix` (BOS stays untouched)
    of the batch rows `rows` (all rows when None). A KV-cached decode must give `intervene` a `Positions`
    tracker, or every step looks like position 0 and its one token (< `protect_prefix`) is left alone."""
    return _edit_fn([(sae, list(interventions))], protect_prefix, rows)


def steering_hooks(
    saes: SAEs,
    interventions: Sequence[Intervention],
    protect_prefix: int = 1,
    rows: slice | None = None,
) -> list[tuple[str, InterventionFn]]:
    """(hook name, `intervene` callback) per hook point the interventions touch, for `intervene_many`.

    Each callback is `steering_hook`'s for the SAEs at that point; SAEs sharing a point read the same unmodified
    h and their edits add up."""
    found = sae_set(saes)
    by_hook: dict[str, list[tuple[JumpReLUSAE, list[Intervention]]]] = {}
    for key, group in group_by_sae(found, interventions).items():
        by_hook.setdefault(hook_name(*hook_of(found[key])), []).append((found[key], group))
    return [(name, _edit_fn(groups, protect_prefix, rows)) for name, groups in by_hook.items()]


def _edit_fn(groups: list[tuple[JumpReLUSAE, list[Intervention]]], protect_prefix: int,
             rows: slice | None) -> InterventionFn:
    rows = rows if rows is not None else slice(None)

    def fn(h: torch.Tensor, offset: int) -> torch.Tensor:
        start = max(0, protect_prefix - offset)
        if start >= h.shape[1]:
            return h
        out = h.clone()
        x = h[rows, start:]
        out[rows, start:] = x + sum(intervention_delta(x, sae, ivs).to(h.dtype) for sae, ivs in groups if ivs)
        return out

    return fn


@torch.no_grad()
def suggest_value(sae: JumpReLUSAE, latent: int, mode: str, max_activation: float | None = None,
                  multiple: float = 2.0) -> float:
    """A sensible default strength: clamp to `multiple` × the latent's max activation (4θ when the max is
    unknown), add the same amount along the unit direction (scaled by ‖d_i‖); 0 for ablate."""
    if mode == "ablate":
        return 0.0
    if not 0 <= latent < sae.d_sae:
        raise UnknownLatent(f"latent {latent} does not exist: this SAE has latents 0..{sae.d_sae - 1}")
    peak = max_activation if max_activation and max_activation > 0 else 4.0 * float(sae.threshold[latent])
    value = multiple * peak
    if mode == "add":
        value *= float(decoder_directions(sae, [latent])[0].norm())
    return float(f"{value:.3g}")
