"""What an explainer and a scorer see, and the interfaces they implement.

An `Explainer` turns one latent's `LatentExamples` into a short text; a `Scorer` measures how well a text
predicts the latent on examples the explainer never saw. `app.explain.examples.ExampleSource` reads the
`LatentExamples` of every latent from an index.db; `app.explain.runner` drives explainers and scorers over
the latents of an SAE and stores the results with `app.explain.store`.

The split: the index keeps per latent `top_k` top windows (ranked by activation) and `per_interval` windows
per activation interval. Every `holdout_every`-th of each list (ranks 1, 1 + k, 1 + 2k, …, so the very top
window is always shown) goes to `held_out`; the rest are `top` / `interval`. Near misses (windows whose centre
fell just below θ) are held out too: they are the hard negatives of a score. Each window carries the latent's
activation at every one of its tokens (0 where inactive), so a held-out window gives positive *and* negative
tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Window:
    """One example window: its tokens (as shown), token ids, the latent's activation per token, the centre index."""

    tokens: tuple[str, ...]
    token_ids: tuple[int, ...]
    values: tuple[float, ...]  # activation of this latent at each token (0.0 where inactive)
    center: int  # index of the example's centre token in the window
    kind: str = "top"  # 'top', 'interval' or 'near'

    def __post_init__(self) -> None:
        if not len(self.tokens) == len(self.token_ids) == len(self.values):
            raise ValueError("a window needs as many tokens, token ids and values")
        if self.tokens and not 0 <= self.center < len(self.tokens):
            raise ValueError(f"centre {self.center} is outside the window of {len(self.tokens)} tokens")

    @property
    def active(self) -> tuple[bool, ...]:
        """Whether the latent is active (activation > 0) at each token."""
        return tuple(v > 0 for v in self.values)

    @property
    def max(self) -> float:
        return max(self.values, default=0.0)


@dataclass(frozen=True)
class LatentExamples:
    """Everything an explainer may look at for one latent, plus the held-out windows its text is scored on.

    `top` and `interval` are for the explainer; `held_out` and `near` are only for scorers. `top_logits` /
    `bottom_logits` are the tokens whose logits the latent's decoder direction raises / lowers most
    (token text, effect), the index's logit lens.
    """

    latent: int
    top: tuple[Window, ...] = ()
    interval: tuple[Window, ...] = ()
    held_out: tuple[Window, ...] = ()
    near: tuple[Window, ...] = ()
    top_logits: tuple[tuple[str, float], ...] = ()
    bottom_logits: tuple[tuple[str, float], ...] = ()
    density: float = 0.0  # share of indexed tokens where the latent is active
    max_activation: float = 0.0
    threshold: float = 0.0

    @property
    def shown(self) -> tuple[Window, ...]:
        """The windows an explainer sees (top, then interval)."""
        return self.top + self.interval

    @property
    def scoring(self) -> tuple[Window, ...]:
        """The windows a scorer tests on (held-out activating windows, then near misses)."""
        return self.held_out + self.near

    @property
    def is_dead(self) -> bool:
        """True when the index saw the latent active nowhere (nothing to explain)."""
        return not (self.top or self.interval or self.held_out)


@dataclass(frozen=True)
class Measurement:
    """One metric a scorer measured over n items (value None when undefined: precision of a label that never fires)."""

    metric: str
    value: float | None
    n: int


@runtime_checkable
class Explainer(Protocol):
    """Writes a short explanation of a latent from its examples.

    `name` is stored as the explanation's `explainer` ('builtin', 'openai:<model>', 'hf:<model>' — never
    'human'); `prompt_version` identifies the prompt/algorithm, so a changed one can be rerun.
    `explain` returns "" when it has nothing to say (the latent is then skipped, not stored).
    """

    name: str
    prompt_version: str

    def explain(self, examples: LatentExamples) -> str: ...


@runtime_checkable
class Scorer(Protocol):
    """Measures how well an explanation predicts a latent, on `examples.scoring` (never `examples.shown`).

    `name` is stored as the score's `scorer` ('builtin', 'detection', 'fuzzing', …).
    """

    name: str

    def score(self, examples: LatentExamples, explanation: str) -> list[Measurement]: ...


@dataclass
class RunCounts:
    """What one explain run did (the CLI prints it, the job reports it as progress)."""

    explained: int = 0
    scored: int = 0
    skipped: int = 0  # done before (resume) or hand-written
    dead: int = 0  # never active in the index: nothing to explain
    failed: int = 0  # the explainer raised (LLM errors); retried on the next run
    errors: list[str] = field(default_factory=list)
