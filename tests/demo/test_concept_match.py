"""Best latent per concept by F1, checked against a brute-force count."""

from __future__ import annotations

import torch

from app.demo.concept_match import CooccurrenceCounter


def test_best_latent_matches_brute_force_and_streams():
    g = torch.Generator().manual_seed(0)
    labels = torch.rand(500, 3, generator=g) < 0.2
    active = torch.rand(500, 8, generator=g) < 0.3
    active[:, 5] = labels[:, 1] | (torch.rand(500, generator=g) < 0.05)  # latent 5 ≈ concept 1
    counter = CooccurrenceCounter(8, 3)
    for i in range(0, 500, 128):  # batches add up to the same counts
        counter.update(active[i:i + 128], labels[i:i + 128])
    best = counter.best(["a", "b", "c"])
    for c, name in enumerate("abc"):
        f1s = []
        for j in range(8):
            tp = (active[:, j] & labels[:, c]).sum().item()
            p = tp / max(1, active[:, j].sum().item())
            r = tp / max(1, labels[:, c].sum().item())
            f1s.append(0.0 if tp == 0 else 2 * p * r / (p + r))
        j = max(range(8), key=lambda k: (f1s[k], -k))
        assert best[name].latent == j
        assert abs(best[name].f1 - f1s[j]) < 1e-9
    assert best["b"].latent == 5 and best["b"].recall == 1.0
