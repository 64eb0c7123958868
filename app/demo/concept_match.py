"""Match each ground-truth concept to the single latent that best detects it, by F1 over tokens.

A latent "detects" a concept on a token when it is active there (pre > θ, SPEC §1); the concept is present
when the token's characters overlap a span of that concept. Special tokens are excluded by the caller.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch


@dataclass
class ConceptMatch:
    """The best latent for one concept, with its F1, precision and recall over tokens."""

    concept: str
    latent: int
    f1: float
    precision: float
    recall: float
    support: int  # tokens where the concept is present

    def to_json(self) -> dict:
        return {"latent": self.latent, "f1": self.f1, "precision": self.precision, "recall": self.recall,
                "support": self.support}


class CooccurrenceCounter:
    """Streams batches of (active [N, d_sae] bool, labels [N, C] bool) into true-positive counts."""

    def __init__(self, d_sae: int, n_concepts: int) -> None:
        self.tp = torch.zeros(n_concepts, d_sae, dtype=torch.float64)
        self.active = torch.zeros(d_sae, dtype=torch.float64)
        self.present = torch.zeros(n_concepts, dtype=torch.float64)
        self.tokens = 0

    def update(self, active: torch.Tensor, labels: torch.Tensor) -> None:
        """Add one batch of tokens (rows) — already stripped of special tokens."""
        if active.shape[0] != labels.shape[0]:
            raise ValueError(f"active has {active.shape[0]} tokens but labels has {labels.shape[0]}")
        a = active.to(torch.float32)
        lab = labels.to(torch.float32)
        # Counts are exact integers below 2^24 per batch in float32; accumulate in float64.
        self.tp += (lab.T @ a).double()
        self.active += a.sum(0).double()
        self.present += lab.sum(0).double()
        self.tokens += int(active.shape[0])

    def best(self, concepts: Iterable[str]) -> dict[str, ConceptMatch]:
        """For every concept, the latent with the highest F1 (ties: the lower index)."""
        precision = self.tp / self.active.clamp(min=1)
        recall = self.tp / self.present.clamp(min=1)[:, None]
        f1 = 2 * self.tp / (self.active[None, :] + self.present[:, None]).clamp(min=1)
        out: dict[str, ConceptMatch] = {}
        for c, name in enumerate(concepts):
            i = int(torch.argmax(f1[c]))
            out[name] = ConceptMatch(name, i, float(f1[c, i]), float(precision[c, i]), float(recall[c, i]),
                                     int(self.present[c]))
        return out
