"""Where each Hugging Face model family keeps its decoder layers, attention, MLP and final norm.

To support a new family, add one `Family` row to FAMILIES keyed by its `config.model_type`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Family:
    """Attribute paths inside a `*ForCausalLM` model (dotted, from the top-level model)."""

    layers: str  # the nn.ModuleList of decoder blocks
    attn: str  # attribute of a block whose output is attn_out
    mlp: str  # attribute of a block whose output is mlp_out
    final_norm: str  # the norm applied before the unembedding
    embed: str  # the token embedding


_LLAMA_LIKE = Family("model.layers", "self_attn", "mlp", "model.norm", "model.embed_tokens")
# Gemma 2/3 normalise each sublayer's output before adding it to the residual: that sum is attn/mlp_out.
_GEMMA2_LIKE = Family(
    "model.layers", "post_attention_layernorm", "post_feedforward_layernorm", "model.norm", "model.embed_tokens"
)

FAMILIES: dict[str, Family] = {
    "gpt2": Family("transformer.h", "attn", "mlp", "transformer.ln_f", "transformer.wte"),
    "gpt_neox": Family("gpt_neox.layers", "attention", "mlp", "gpt_neox.final_layer_norm", "gpt_neox.embed_in"),
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _GEMMA2_LIKE,
    "gemma3_text": _GEMMA2_LIKE,
}


class UnknownFamilyError(ValueError):
    """The model's family has no entry in FAMILIES."""


def family_of(model: nn.Module) -> Family:
    """The Family row for a loaded model, or a clear error naming what to add."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in FAMILIES:
        raise UnknownFamilyError(
            f"model type {model_type!r} is not supported yet: add a Family row for it to FAMILIES in "
            f"app/lm/families.py (supported: {', '.join(sorted(FAMILIES))})"
        )
    return FAMILIES[model_type]


def get_path(root: nn.Module, dotted: str) -> nn.Module:
    """Follow a dotted attribute path from `root`."""
    obj = root
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj
