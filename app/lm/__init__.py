"""The language-model adapter: loading, hook points, capture and interventions."""

from app.lm.families import FAMILIES, Family, UnknownFamilyError
from app.lm.hooks import (
    HOOK_KINDS,
    HookPoint,
    Positions,
    capture,
    capture_many,
    hook_name,
    hook_of,
    intervene,
    intervene_many,
    parse_hook_name,
    resolve_hook,
)
from app.lm.model import LanguageModel, TokenBatch, load_lm

__all__ = [
    "FAMILIES",
    "HOOK_KINDS",
    "Family",
    "HookPoint",
    "LanguageModel",
    "Positions",
    "TokenBatch",
    "UnknownFamilyError",
    "capture",
    "capture_many",
    "hook_name",
    "hook_of",
    "intervene",
    "intervene_many",
    "load_lm",
    "parse_hook_name",
    "resolve_hook",
]
