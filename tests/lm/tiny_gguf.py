"""Write a tiny random Llama-architecture GGUF file (float32 tensors, the tiny byte-level BPE tokenizer)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_tiny_gguf(path: Path, tokenizer, d_model: int = 32, n_layers: int = 2, n_heads: int = 4,
                    n_kv_heads: int = 2, d_ff: int = 64, seed: int = 0) -> Path:
    """A GGUF file transformers' reader accepts (llama.cpp tensor names and tokenizer keys), random weights."""
    import gguf

    rng = np.random.default_rng(seed)
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    vocab = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    tokens = [t for t, _ in vocab]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    special = set(tokenizer.all_special_ids)
    head_dim = d_model // n_heads

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_context_length(128)
    w.add_embedding_length(d_model)
    w.add_block_count(n_layers)
    w.add_feed_forward_length(d_ff)
    w.add_head_count(n_heads)
    w.add_head_count_kv(n_kv_heads)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3 if i in special else 1 for i in range(len(tokens))])
    w.add_token_merges(merges)
    w.add_bos_token_id(tokenizer.bos_token_id)
    w.add_eos_token_id(tokenizer.eos_token_id)
    w.add_pad_token_id(tokenizer.pad_token_id)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    w.add_tensor("token_embd.weight", weight(len(tokens), d_model))
    w.add_tensor("output_norm.weight", np.ones(d_model, dtype=np.float32))
    w.add_tensor("output.weight", weight(len(tokens), d_model))
    for i in range(n_layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", 1 + weight(d_model))
        w.add_tensor(f"blk.{i}.attn_q.weight", weight(d_model, d_model))
        w.add_tensor(f"blk.{i}.attn_k.weight", weight(n_kv_heads * head_dim, d_model))
        w.add_tensor(f"blk.{i}.attn_v.weight", weight(n_kv_heads * head_dim, d_model))
        w.add_tensor(f"blk.{i}.attn_output.weight", weight(d_model, d_model))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", 1 + weight(d_model))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", weight(d_ff, d_model))
        w.add_tensor(f"blk.{i}.ffn_up.weight", weight(d_ff, d_model))
        w.add_tensor(f"blk.{i}.ffn_down.weight", weight(d_model, d_ff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
