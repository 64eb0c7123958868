"""Load a Hugging Face causal LM and its tokenizer, and tokenize text into padded batches."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from app.lm.families import Family, family_of, get_path
from app.lm.gguf import converted_folder, is_gguf
from app.runtime import resolve_device, resolve_dtype

log = logging.getLogger(__name__)


@dataclass
class TokenBatch:
    """Right-padded token ids with their masks, all [B, T]."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor  # 1 for real tokens, 0 for padding
    special_mask: torch.Tensor  # True for BOS/EOS/PAD and other special tokens (never trained on)


@dataclass
class LanguageModel:
    """A causal LM plus tokenizer, with the family table that locates its hook points."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    family: Family

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def base_model(self) -> nn.Module:
        """The decoder stack without the LM head (model.model, model.transformer, model.gpt_neox)."""
        return self.model.base_model

    @property
    def layers(self) -> nn.ModuleList:
        return get_path(self.model, self.family.layers)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def d_model(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[1])

    @property
    def max_positions(self) -> int | None:
        """The model's context limit when its config states one (GPT-2: n_positions; most: max_position_embeddings)."""
        cfg = self.model.config
        for attr in ("max_position_embeddings", "n_positions", "n_ctx"):
            value = getattr(cfg, attr, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    @property
    def final_norm(self) -> nn.Module:
        return get_path(self.model, self.family.final_norm)

    @property
    def unembed(self) -> torch.Tensor:
        """W_U as [d_model, vocab]."""
        return self.model.get_output_embeddings().weight.T

    @cached_property
    def special_ids(self) -> torch.Tensor:
        ids = set(self.tokenizer.all_special_ids)
        for attr in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(self.tokenizer, attr, None) is not None:
                ids.add(getattr(self.tokenizer, attr))
        return torch.tensor(sorted(ids), dtype=torch.long)

    def special_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """True where a token is special or padding."""
        mask = torch.isin(input_ids, self.special_ids.to(input_ids.device))
        if attention_mask is not None:
            mask |= attention_mask == 0
        return mask

    def token_ids(self, text: str, prepend_bos: bool = True, max_length: int | None = None) -> list[int]:
        """Token ids of one text; with `prepend_bos`, exactly one BOS first when the tokenizer has one."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        bos = self.tokenizer.bos_token_id
        if prepend_bos and bos is not None:
            ids = [bos, *ids]
        return ids[:max_length] if max_length else ids

    def tokenize(self, texts: list[str], prepend_bos: bool = True, max_length: int | None = None) -> TokenBatch:
        """Right-padded batch of several texts."""
        rows = [self.token_ids(t, prepend_bos, max_length) for t in texts]
        return self.pad(rows)

    def pad(self, rows: list[list[int]]) -> TokenBatch:
        """Right-pad lists of token ids into a TokenBatch."""
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id or 0
        width = max((len(r) for r in rows), default=0)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            attn[i, : len(r)] = 1
        return TokenBatch(ids, attn, self.special_mask(ids, attn))

    def token_strs(self, ids: list[int]) -> list[str]:
        """Each id decoded on its own (what the UI shows per token)."""
        return [self.tokenizer.decode([i]) for i in ids]


def load_lm(
    name_or_path: str | os.PathLike,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> LanguageModel:
    """Load a causal LM + tokenizer from a local folder, a `.gguf` file or a hub id.

    Device "auto"/None → CUDA with bf16 when present, CPU with float32 otherwise; both overridable.
    A GGUF file is dequantised once into a cached float32 folder (app.lm.gguf) and loaded from there at `dtype`;
    the LM keeps the file's path as its name.
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    name = str(name_or_path)
    source = str(converted_folder(name)) if is_gguf(name) else name
    local = Path(source).is_dir()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dt, local_files_only=local)
    except (OSError, ValueError) as e:  # huggingface_hub < 1 says "Repo id must be ..." (a ValueError) for a bad path
        raise ValueError(f"cannot load model {name!r}: {e}") from None
    model.to(dev).eval()
    model.requires_grad_(False)
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    lm = LanguageModel(model=model, tokenizer=tokenizer, name=name, family=family_of(model))
    log.info("loaded %s (%s, %d layers, d_model %d) on %s/%s", name, model.config.model_type, lm.n_layers,
             lm.d_model, dev, dt)
    return lm
