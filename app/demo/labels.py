"""Map a document's character-span labels onto its tokens through the tokenizer's offsets.

A token carries a concept when its characters overlap a span of that concept. Byte-level BPE offsets with
`trim_offsets` leave out the leading space, so " red" covers exactly the characters of "red".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from app.demo.lexicon import CONCEPTS
from app.demo.world import Document


@dataclass
class LabelledTokens:
    """Token ids of one document (BOS first when `prepend_bos`) and a [T, n_concepts] bool label matrix."""

    input_ids: list[int]
    labels: np.ndarray  # [T, len(concepts)] bool; the BOS row is all False
    concepts: tuple[str, ...]


def char_labels(doc: Document, concepts: tuple[str, ...] = CONCEPTS) -> np.ndarray:
    """[len(text), n_concepts] bool: which concepts cover each character."""
    index = {c: i for i, c in enumerate(concepts)}
    out = np.zeros((len(doc.text), len(concepts)), dtype=bool)
    for span in doc.spans:
        if span.concept in index:
            out[span.start:span.end, index[span.concept]] = True
    return out


def label_document(tokenizer, doc: Document, concepts: tuple[str, ...] = CONCEPTS,
                   prepend_bos: bool = True, max_length: int | None = None) -> LabelledTokens:
    """Tokenize `doc` and label each token with every concept whose span its characters overlap."""
    enc = tokenizer(doc.text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    offsets: list[tuple[int, int]] = [tuple(o) for o in enc["offset_mapping"]]
    chars = char_labels(doc, concepts)
    # Prefix sums make "any label in [s, e)" O(1) per token.
    cum = np.concatenate([np.zeros((1, len(concepts)), dtype=np.int64), np.cumsum(chars, axis=0)])
    labels = np.zeros((len(ids), len(concepts)), dtype=bool)
    for t, (s, e) in enumerate(offsets):
        if e > s:
            labels[t] = (cum[e] - cum[s]) > 0
    bos = tokenizer.bos_token_id
    if prepend_bos and bos is not None:
        ids = [bos, *ids]
        labels = np.concatenate([np.zeros((1, len(concepts)), dtype=bool), labels])
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    return LabelledTokens(ids, labels, concepts)


def label_batch(tokenizer, docs: list[Document], concepts: tuple[str, ...] = CONCEPTS,
                max_length: int | None = None, pad_id: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids [B,T], attention_mask [B,T], labels [B,T,C] bool) for several documents."""
    rows = [label_document(tokenizer, d, concepts, max_length=max_length) for d in docs]
    width = max((len(r.input_ids) for r in rows), default=0)
    if pad_id is None:
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.zeros((len(rows), width, len(concepts)), dtype=torch.bool)
    for i, r in enumerate(rows):
        n = len(r.input_ids)
        ids[i, :n] = torch.tensor(r.input_ids, dtype=torch.long)
        attn[i, :n] = 1
        labels[i, :n] = torch.from_numpy(r.labels)
    return ids, attn, labels
