"""Hook points, activation capture that stops after the hooked layer, and interventions.

Hook points per layer L (SAELens / TransformerLens names `blocks.L.hook_<kind>`):
  resid_pre  — input of block L;   resid_post — output of block L;
  attn_out   — what attention adds to the residual;  mlp_out — what the MLP adds.
Blocks may return a tensor (transformers 5) or a tuple whose first item is the hidden state (4.x).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch
from torch import nn

from app.lm.families import get_path

if TYPE_CHECKING:
    from app.lm.model import LanguageModel
    from app.sae.jumprelu import JumpReLUSAE

# The hook kinds, written once: jobs' validation (app/jobs/spec.py) and the trainer's config read them from here.
HookKind = Literal["resid_pre", "resid_post", "attn_out", "mlp_out"]
HOOK_KINDS: tuple[str, ...] = get_args(HookKind)
_HOOK_NAME = re.compile(rf"^blocks\.(\d+)\.hook_({'|'.join(HOOK_KINDS)})$")

# fn(h, offset) -> new h; h is [B, T, d]; offset is the absolute position of h[:, 0]: 0 for a whole sequence,
# the number of tokens already seen when a KV cache holds them (told by the caller through a `Positions` tracker).
InterventionFn = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass(frozen=True)
class HookPoint:
    """A resolved hook: the module, and whether it reads its input (resid_pre) or output."""

    kind: str
    layer: int
    module: nn.Module
    on_input: bool

    @property
    def name(self) -> str:
        return hook_name(self.kind, self.layer)


def hook_name(kind: str, layer: int) -> str:
    """`blocks.{layer}.hook_{kind}`, the name SAELens writes in cfg.json."""
    return f"blocks.{layer}.hook_{kind}"


def parse_hook_name(name: str) -> tuple[str, int]:
    """(kind, layer) from `blocks.L.hook_kind`."""
    m = _HOOK_NAME.match(name)
    if not m:
        raise ValueError(f"hook name {name!r} is not of the form blocks.<layer>.hook_<{'|'.join(HOOK_KINDS)}>")
    return m.group(2), int(m.group(1))


def hook_of(sae: JumpReLUSAE) -> tuple[str, int]:
    """(kind, layer) of the SAE's hook point, from cfg.json metadata `hook_name`."""
    name = sae.cfg.metadata.get("hook_name")
    if not name:
        raise ValueError("the SAE's cfg.json metadata has no hook_name (e.g. 'blocks.1.hook_resid_post')")
    return parse_hook_name(str(name))


def resolve_hook(lm: LanguageModel, kind: str, layer: int) -> HookPoint:
    """The module to hook for `kind` at `layer`, with range and name checks."""
    if kind not in HOOK_KINDS:
        raise ValueError(f"unknown hook {kind!r}; choose one of {', '.join(HOOK_KINDS)}")
    n = lm.n_layers
    if not 0 <= layer < n:
        raise ValueError(f"layer {layer} out of range: the model has layers 0..{n - 1}")
    block = lm.layers[layer]
    if kind == "resid_pre":
        return HookPoint(kind, layer, block, on_input=True)
    if kind == "resid_post":
        return HookPoint(kind, layer, block, on_input=False)
    attr = lm.family.attn if kind == "attn_out" else lm.family.mlp
    return HookPoint(kind, layer, get_path(block, attr), on_input=False)


def _first(x: Any) -> torch.Tensor:
    return x[0] if isinstance(x, tuple) else x


def _replace_first(x: Any, h: torch.Tensor) -> Any:
    return (h, *x[1:]) if isinstance(x, tuple) else h


class _StopForward(Exception):
    """Raised by the capture hook to end the forward pass after the hooked layer."""


HookSpec = str | tuple[str, int]  # `blocks.L.hook_kind`, or (kind, layer)


def resolve_point(lm: LanguageModel, point: HookSpec) -> HookPoint:
    """`resolve_hook` for a hook given by name or as (kind, layer)."""
    kind, layer = parse_hook_name(point) if isinstance(point, str) else point
    return resolve_hook(lm, kind, layer)


@torch.no_grad()
def capture(
    lm: LanguageModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    kind: str,
    layer: int,
) -> torch.Tensor:
    """Activations [B, T, d] at the hook; the forward pass stops right after the hooked module."""
    return capture_many(lm, input_ids, attention_mask, [(kind, layer)])[hook_name(kind, layer)]


@torch.no_grad()
def capture_many(
    lm: LanguageModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    points: Iterable[HookSpec],
) -> dict[str, torch.Tensor]:
    """Activations [B, T, d] at every hook point in ONE forward pass, keyed by hook name.

    The pass stops as soon as every requested hook has fired, i.e. right after the deepest one; each tensor
    equals what `capture` returns for that hook alone.
    """
    resolved = list({p.name: p for p in (resolve_point(lm, q) for q in points)}.values())
    names = [p.name for p in resolved]
    if not names:
        return {}
    out: dict[str, torch.Tensor] = {}

    def grab(name: str, h: torch.Tensor) -> None:
        out[name] = h.detach()
        if len(out) == len(names):
            raise _StopForward

    handles = []
    try:
        for point in resolved:
            if point.on_input:
                handles.append(point.module.register_forward_pre_hook(
                    lambda m, args, kwargs, n=point.name: grab(n, args[0] if args else kwargs["hidden_states"]),
                    with_kwargs=True))
            else:
                handles.append(point.module.register_forward_hook(
                    lambda m, args, output, n=point.name: grab(n, _first(output))))
        lm.base_model(
            input_ids=input_ids.to(lm.device),
            attention_mask=None if attention_mask is None else attention_mask.to(lm.device),
            use_cache=False,
        )
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    missing = [n for n in names if n not in out]
    if missing:
        raise RuntimeError(f"hook {', '.join(missing)} never fired during the forward pass")
    return {n: out[n] for n in names}


class Positions:
    """The absolute position of the next token a cached decode feeds through the hook.

    A caller that continues one sequence over several forwards (a KV cache) makes one tracker per sequence,
    passes it to `intervene`, and calls `reset()` before starting another sequence. Each forward over T new
    tokens then sees offset `next` and advances it by T, whatever keyword the model passes its cache under.
    """

    def __init__(self) -> None:
        self.next = 0

    def reset(self) -> None:
        """Start a new sequence: its first token is at position 0."""
        self.next = 0

    def take(self, n_tokens: int) -> int:
        """The offset of a forward over `n_tokens` new tokens; advances past them."""
        offset = self.next
        self.next += n_tokens
        return offset


@contextmanager
def intervene(lm: LanguageModel, kind: str, layer: int, fn: InterventionFn,
              positions: Positions | None = None) -> Iterator[HookPoint]:
    """Within the block, every forward (or `generate`) replaces the hook's activation h [B, T, d] by fn(h, offset).

    `positions` says where h[:, 0] sits: None when every forward runs a whole sequence without a KV cache
    (offset 0 each time); a `Positions` tracker when forwards continue a cached sequence (`steer`, `generate`).
    The offset is never read from the model's keyword arguments, whose names change between versions.
    """
    point = resolve_hook(lm, kind, layer)

    def edit(h: torch.Tensor) -> torch.Tensor:
        return fn(h, 0 if positions is None else positions.take(h.shape[1]))

    def on_input(module: nn.Module, args: tuple, kwargs: dict):
        if args:
            return (edit(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": edit(kwargs["hidden_states"])}

    def on_output(module: nn.Module, args: tuple, output: Any):
        return _replace_first(output, edit(_first(output)))

    if point.on_input:
        handle = point.module.register_forward_pre_hook(on_input, with_kwargs=True)
    else:
        handle = point.module.register_forward_hook(on_output)
    try:
        yield point
    finally:
        handle.remove()


@contextmanager
def intervene_many(lm: LanguageModel, edits: Iterable[tuple[HookSpec, InterventionFn]],
                   track_positions: bool = False) -> Iterator[list[HookPoint]]:
    """`intervene` at several hook points at once (one fn per point, applied in one forward).

    With `track_positions`, each hook gets its own `Positions` tracker (a cached decode: every hooked module
    sees every forward once, so each tracker advances in step).
    """
    with ExitStack() as stack:
        points = []
        for point, fn in edits:
            kind, layer = parse_hook_name(point) if isinstance(point, str) else point
            positions = Positions() if track_positions else None
            points.append(stack.enter_context(intervene(lm, kind, layer, fn, positions=positions)))
        yield points
