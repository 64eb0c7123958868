"""Settings of a latent index (`jumpscope index`), validated on construction and stored in the database."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

# Settings that change the answer: an existing index can only be resumed or extended with the same values.
FINGERPRINT_FIELDS = (
    "context_size", "batch_contexts", "top_k", "n_intervals", "per_interval", "interval_subdivisions",
    "window_before", "window_after", "hist_min_exp", "hist_max_exp", "hist_bins_per_decade",
    "outlier_factor", "seed", "theta_window", "theta_bins", "near_k",
)


@dataclass
class IndexConfig:
    """How a latent index is gathered (one LM pass) and what each dashboard keeps."""

    context_size: int = 128  # tokens per packed corpus row (BOS first); the SAE's metadata value when known
    batch_contexts: int = 8  # rows per LM batch; batches are aligned to multiples of this in global row order
    top_k: int = 20  # top activating examples kept per latent (non-overlapping windows)
    n_intervals: int = 10  # activation intervals over (0, max] that examples are sampled from
    per_interval: int = 5  # uniform samples kept per interval
    interval_subdivisions: int = 4  # reservoir sub-intervals per interval (sets how finely edges are snapped)
    window_before: int = 16  # tokens shown before an example's centre token
    window_after: int = 8  # tokens shown after it; windows of one latent's top examples never overlap
    hist_min_exp: int = -4  # histogram edges are 10**e for e in [hist_min_exp, hist_max_exp] ...
    hist_max_exp: int = 4  # ... (values outside are counted in the first / last bin)
    hist_bins_per_decade: int = 8  # log-spaced bins per factor of 10
    outlier_factor: float = 10.0  # skip positions whose activation norm > factor × reference median; 0 = off
    theta_window: float = 0.5  # pre-activations in [(1 − w)·θ, (1 + w)·θ) are histogrammed around θ ...
    theta_bins: int = 20  # ... in this many equal bins (even, so θ is an edge)
    near_k: int = 10  # near misses kept per latent: the examples whose pre-activation fell just below θ
    seed: int = 0  # seed of the position hash that draws interval samples (same seed → same samples)
    latent_chunk: int = 16384  # latents encoded / merged at once (bounds memory to batch × chunk)
    n_logits: int = 10  # top and bottom logit effects kept per latent
    n_neighbors: int = 10  # nearest latents by decoder cosine kept per latent
    loss_effects: bool = True  # compute the per-token loss effect of ablating the latent on its top examples
    loss_effect_top: int = 20  # ... for this many of them (each costs ~one batched LM forward of its row prefix)
    loss_effects_when: str = "auto"  # 'eager' (at finalise), 'lazy' (on a latent's first dashboard view, cached),
    # 'auto': eager when the estimated ablated-forward tokens are at most the pass's tokens, else lazy
    commit_every: int = 50  # commit the running state at least every N batches ...
    commit_seconds: float = 120.0  # ... or every this many seconds, whichever comes first

    def __post_init__(self) -> None:
        positive = ("context_size", "batch_contexts", "top_k", "n_intervals", "per_interval",
                    "interval_subdivisions", "hist_bins_per_decade", "latent_chunk", "commit_every")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"index setting {name} must be >= 1, got {getattr(self, name)}")
        for name in ("window_before", "window_after", "n_logits", "n_neighbors", "loss_effect_top"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"index setting {name} must be >= 0, got {getattr(self, name)}")
        if self.context_size < 2:
            raise ValueError("context_size must be >= 2 (BOS plus at least one token)")
        if self.hist_max_exp <= self.hist_min_exp:
            raise ValueError("hist_max_exp must be greater than hist_min_exp")
        if not 0 < self.theta_window < 1:
            raise ValueError(f"theta_window must be in (0, 1), got {self.theta_window}")
        if int(self.theta_bins) < 2 or int(self.theta_bins) % 2:
            raise ValueError(f"theta_bins must be an even number >= 2, got {self.theta_bins}")
        if int(self.near_k) < 1:
            raise ValueError(f"near_k must be >= 1, got {self.near_k}")
        if self.loss_effects_when not in ("auto", "eager", "lazy"):
            raise ValueError(f"loss_effects_when must be auto, eager or lazy, got {self.loss_effects_when!r}")
        if self.outlier_factor < 0:
            raise ValueError("outlier_factor must be >= 0 (0 turns outlier skipping off)")

    @property
    def n_subintervals(self) -> int:
        """Reservoirs per latent: sub-intervals of (0, 2**e] where 2**e is the max rounded up to a power of 2."""
        return self.n_intervals * self.interval_subdivisions

    @property
    def separation(self) -> int:
        """Two example centres closer than this (in one row) would have overlapping windows."""
        return self.window_before + self.window_after

    @property
    def n_hist_bins(self) -> int:
        return (self.hist_max_exp - self.hist_min_exp) * self.hist_bins_per_decade

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint(self) -> dict[str, Any]:
        """The answer-changing settings (compared on resume / extension)."""
        return {k: getattr(self, k) for k in FINGERPRINT_FIELDS}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IndexConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
