"""Planted-dictionary activations for the ground-truth SAE benchmark (benchmarks/synthetic.py).

In the spirit of SAELens's SynthSAEBench: `n_dirs` unit directions in `d` dimensions (superposition n_dirs / d),
each firing with a Zipfian probability, scaled so the planted mean L0 is `l0`. Optional structure:

- correlated directions: every direction gets a shared low-rank component of weight `dir_correlation`;
- correlated firing: a Gaussian copula with a random low-rank correlation of strength `fire_correlation`
  (direction i fires when its Gaussian z_i falls below the p_i quantile, so marginals stay exactly p_i);
- hierarchy: the first `n_parents` directions each own `children` child directions (parent + noise,
  renormalised); a child may fire only where its parent fires;
- magnitudes: per-direction mean in [1, 1 + mag_spread], per-token lognormal noise of σ `mag_noise`;
- isotropic Gaussian noise of std `noise` on the activations;
- a mean: a fixed offset along a random direction, sized so the mean holds `mean_share` of the energy
  (‖μ‖² ÷ E‖x‖², the quantity `--center` auto reads; real LM layers hold 0.2–0.9 of it, planted data ≤ 0.18).

Everything is a pure function of `(SynthConfig, seed)`; nothing is tuned to a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class SynthConfig:
    """One benchmark setting: the planted dictionary and how its directions fire."""

    d: int = 64  # activation width
    ratio: float = 4.0  # superposition: n_dirs / d
    l0: float = 5.0  # planted mean number of firing directions per token
    zipf: float = 0.5  # firing probability p_i ∝ (i + 1)^(−zipf)
    dir_correlation: float = 0.0  # weight of the shared low-rank component in every direction
    fire_correlation: float = 0.0  # strength of the copula correlation of firing (0: independent)
    n_parents: int = 0  # hierarchical directions: parents (each with `children` children)
    children: int = 3
    mag_spread: float = 1.0  # per-direction mean magnitude in [1, 1 + mag_spread]
    mag_noise: float = 0.2  # σ of the per-token lognormal magnitude factor
    noise: float = 0.0  # std of additive Gaussian noise per dimension
    mean_share: float = 0.0  # if > 0: ‖μ‖² ÷ E‖x‖² after a fixed offset along a random direction is added

    @property
    def n_dirs(self) -> int:
        return max(1, round(self.ratio * self.d))

    def __post_init__(self) -> None:
        if self.d <= 0 or self.ratio <= 0 or not 0 < self.l0 < self.n_dirs:
            raise ValueError(f"need d > 0, ratio > 0 and 0 < l0 < n_dirs, got {self}")
        if self.n_parents * (1 + self.children) > self.n_dirs:
            raise ValueError("n_parents · (1 + children) exceeds the number of directions")
        if not 0.0 <= self.mean_share < 1.0:
            raise ValueError(f"mean_share must be in [0, 1), got {self.mean_share}")


# The benchmark's settings (docs/training.md): here rather than in benchmarks/synthetic.py, so that code without
# scipy (which the metrics need) can plant them too.
SETTINGS: dict[str, SynthConfig] = {
    "s2": SynthConfig(d=64, ratio=2.0, l0=5.0, zipf=0.5),
    "s4c": SynthConfig(d=64, ratio=4.0, l0=8.0, zipf=0.7, dir_correlation=0.3, fire_correlation=0.3),
    "s8h": SynthConfig(d=64, ratio=8.0, l0=8.0, zipf=0.7, n_parents=32, children=3, mag_spread=2.0),
    "s16n": SynthConfig(d=64, ratio=16.0, l0=10.0, zipf=1.0, noise=0.02, mag_noise=0.4),
}


def at_width(cfg: SynthConfig, d: int) -> SynthConfig:
    """The same setting at activation width d: superposition, L0, Zipf exponent, the *fraction* of hierarchical
    directions (n_parents scales with d) and the noise's norm (its per-dimension std scales with √(cfg.d / d))."""
    return replace(cfg, d=d, n_parents=round(cfg.n_parents * d / cfg.d), noise=cfg.noise * math.sqrt(cfg.d / d))


class PlantedDictionary:
    """The ground truth of one setting: directions, firing probabilities, magnitudes and the copula."""

    def __init__(self, cfg: SynthConfig, seed: int = 0) -> None:
        self.cfg = cfg
        g = torch.Generator().manual_seed(seed)
        n, d = cfg.n_dirs, cfg.d
        dirs = torch.randn(n, d, generator=g, dtype=torch.float64)
        if cfg.dir_correlation > 0:  # a shared rank-4 component makes directions correlated
            basis = torch.randn(4, d, generator=g, dtype=torch.float64) / math.sqrt(d)
            dirs += cfg.dir_correlation * math.sqrt(d) * torch.randn(n, 4, generator=g, dtype=torch.float64) @ basis
        # parent p (index p) owns children at n_parents + p·children + k
        self.parent = torch.full((n,), -1, dtype=torch.long)
        for p in range(cfg.n_parents):
            for k in range(cfg.children):
                c = cfg.n_parents + p * cfg.children + k
                self.parent[c] = p
                dirs[c] = dirs[p] / dirs[p].norm() * 1.0 + 0.8 * dirs[c] / dirs[c].norm()
        self.dirs = (dirs / dirs.norm(dim=1, keepdim=True)).float()  # [n, d], unit rows
        # Zipfian marginals scaled to the planted L0, in a random order (rank is not index)
        weights = torch.arange(1, n + 1, dtype=torch.float64).pow(-cfg.zipf)
        weights = weights[torch.randperm(n, generator=g)]
        self.p = _scale_to_sum(weights, cfg.l0)
        # a child's conditional probability given its parent (its marginal is p_parent · p_cond ≤ p_child)
        has_parent = self.parent >= 0
        self.p_cond = self.p.clone()
        self.p_cond[has_parent] = (self.p[has_parent] / self.p[self.parent[has_parent]]).clamp(max=1.0)
        self.mag_mean = (1.0 + cfg.mag_spread * torch.rand(n, generator=g, dtype=torch.float64)).float()
        rank = 8
        self.copula = torch.randn(n, rank, generator=g, dtype=torch.float64) * math.sqrt(cfg.fire_correlation / rank)
        self._quantile = torch.special.ndtri(self.p_cond.clamp(1e-12, 1 - 1e-12))
        self.offset = torch.zeros(d)
        if cfg.mean_share > 0:  # drawn last, so every other draw matches the setting without a mean
            self.offset = self._offset_for(cfg.mean_share, torch.randn(d, generator=g, dtype=torch.float64), seed)

    def sample(self, n_tokens: int, seed: int, chunk: int = 65_536) -> tuple[torch.Tensor, torch.Tensor]:
        """(activations [n_tokens, d] float32, firing mask [n_tokens, n_dirs] bool) for a sample seed."""
        g = torch.Generator().manual_seed(seed)
        xs, masks = [], []
        for start in range(0, n_tokens, chunk):
            m = min(chunk, n_tokens - start)
            fire = self._fire(m, g)
            mags = self.mag_mean * torch.exp(self.cfg.mag_noise * torch.randn(m, self.cfg.n_dirs, generator=g))
            x = (fire * mags) @ self.dirs
            if self.cfg.noise > 0:
                x += self.cfg.noise * torch.randn(m, self.cfg.d, generator=g)
            xs.append(x + self.offset)
            masks.append(fire)
        return torch.cat(xs), torch.cat(masks)

    def _offset_for(self, share: float, direction: torch.Tensor, seed: int, n: int = 262_144) -> torch.Tensor:
        """The offset c·u (u = direction, normalised) that gives the mean `share` of the energy on a calibration
        sample: with μ₀, E₀ the sample's mean and energy and a = μ₀·u, ‖μ₀ + c·u‖² = share · (E₀ + 2ca + c²)
        is c² + 2ac + (‖μ₀‖² − share · E₀) ÷ (1 − share) = 0, whose larger root is taken."""
        x, _ = self.sample(n, seed=30_000 + seed)
        x = x.double()
        mu, energy = x.mean(0), float(x.pow(2).sum(1).mean())
        mu_sq, u = float(mu @ mu), direction / direction.norm()
        if mu_sq > share * energy:
            raise ValueError(f"the planted mean already holds {mu_sq / energy:.3f} of the energy, "
                             f"more than mean_share {share}")
        a = float(mu @ u)
        c = -a + math.sqrt(a * a - (mu_sq - share * energy) / (1.0 - share))
        return (c * u).float()

    def _fire(self, m: int, g: torch.Generator) -> torch.Tensor:
        """Firing mask of m tokens: copula Gaussians below each direction's quantile, children gated by parents."""
        z = torch.randn(m, self.cfg.n_dirs, generator=g, dtype=torch.float64)
        if self.cfg.fire_correlation > 0:
            shared = torch.randn(m, self.copula.shape[1], generator=g, dtype=torch.float64) @ self.copula.T
            z = (z + shared) / torch.sqrt(1.0 + self.copula.pow(2).sum(1))
        fire = z < self._quantile
        has_parent = self.parent >= 0
        if bool(has_parent.any()):
            fire[:, has_parent] &= fire[:, self.parent[has_parent]]
        return fire


def _scale_to_sum(weights: torch.Tensor, total: float) -> torch.Tensor:
    """Scale weights to probabilities ≤ 1 summing to `total` (mass clipped at 1 is spread over the rest)."""
    p = weights / weights.sum() * total
    for _ in range(50):
        over = p > 1.0
        if not bool(over.any()):
            break
        p[over] = 1.0
        free = ~over & (p < 1.0)
        p[free] *= (total - float(p[~free].sum())) / float(p[free].sum())
    return p.clamp(max=1.0)
