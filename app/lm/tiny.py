"""Tiny Hugging Face models built from configs, and BPE tokenizers trained locally with `tokenizers`.

Used by tests (every family) and by the embedded demo; they load back through `load_lm` exactly like
a real checkpoint, since they are written with `save_pretrained`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"}
FAMILY_TYPES = ("gpt2", "gpt_neox", "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text")


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts`, with <bos>/<eos>/<pad>/<unk> and offsets."""
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def tiny_config(model_type: str, tokenizer: PreTrainedTokenizerFast, d_model: int = 32, n_layers: int = 3,
                n_heads: int = 4, max_positions: int = 256):
    """A small config of `model_type` sized for tests, wired to the tokenizer's special ids."""
    ids = dict(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vocab = len(tokenizer)
    if model_type == "gpt2":
        return AutoConfig.for_model("gpt2", vocab_size=vocab, n_embd=d_model, n_layer=n_layers, n_head=n_heads,
                                    n_positions=max_positions, **ids)
    common = dict(vocab_size=vocab, hidden_size=d_model, num_hidden_layers=n_layers,
                  num_attention_heads=n_heads, intermediate_size=4 * d_model,
                  max_position_embeddings=max_positions, **ids)
    if model_type == "gpt_neox":
        return AutoConfig.for_model("gpt_neox", rotary_pct=0.5, **common)
    if model_type in ("llama", "mistral", "qwen2", "qwen3"):
        return AutoConfig.for_model(model_type, num_key_value_heads=max(1, n_heads // 2), **common)
    if model_type in ("gemma", "gemma2", "gemma3_text"):
        return AutoConfig.for_model(model_type, num_key_value_heads=max(1, n_heads // 2),
                                    head_dim=d_model // n_heads, **common)
    raise ValueError(f"no tiny config for {model_type!r}; choose one of {', '.join(FAMILY_TYPES)}")


def save_tiny_model(folder: str | os.PathLike, model_type: str, tokenizer: PreTrainedTokenizerFast,
                    seed: int = 0, **sizes) -> Path:
    """Build a randomly initialised tiny model and save it with its tokenizer via `save_pretrained`."""
    folder = Path(folder)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(model_type, tokenizer, **sizes))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
