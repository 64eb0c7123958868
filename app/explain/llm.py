"""LLM explainers and delphi-style scorers (detection, fuzzing) over any `ChatModel`.

`LLMExplainer` asks the chat model for a short phrase from the latent's shown windows (marked tokens with their
activation values, `app.explain.prompts`). The scorers only use windows the explainer never saw
(`LatentExamples.scoring`), following EleutherAI delphi's definitions:

- detection: the scorer LLM reads the explanation and unmarked example texts and says which ones activate the
  latent. Activating = held-out windows (from the top list and every activation interval); non-activating =
  scoring windows where the latent is active nowhere (near misses: its pre-activation fell just below θ).
- fuzzing: the scorer LLM sees activating windows with tokens marked and says whether the marks are exactly the
  tokens the explanation describes. Correctly marked = the active tokens of a held-out window; incorrectly
  marked = as many random inactive tokens of another held-out window, or the centre of a near miss.

Both report the balanced accuracy (mean of the true-positive and true-negative rates, so a scorer that always
says 1 gets 0.5), the plain accuracy, and the share of examples the LLM answered in a parseable form. Examples
are shuffled (seeded per latent) and sent `batch_size` to a prompt; a batch whose answer cannot be parsed counts
as unanswered, and a latent none of whose batches could be parsed (or reached) fails with an LLMError.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from app.explain.base import LatentExamples, Measurement, Window
from app.explain.chat import ChatModel, LLMError, LLMResponseError
from app.explain.prompts import (
    PROMPT_VERSION,
    active_positions,
    detection_messages,
    explain_messages,
    fuzzing_messages,
    parse_explanation,
    parse_labels,
    render,
)


@dataclass
class LLMExplainer:
    """Explains a latent with a chat model; `name` is the chat model's ('openai:<model>' / 'hf:<model>')."""

    chat: ChatModel
    max_examples: int = 20
    max_tokens: int = 120
    prompt_version: str = PROMPT_VERSION
    default_scorers: list[Any] = field(default_factory=list)  # what the runner scores with (see with_scorers)

    @property
    def name(self) -> str:
        return self.chat.name

    def explain(self, examples: LatentExamples) -> str:
        """The explanation ("" for a dead latent); LLMError when the model fails or answers no explanation."""
        if examples.is_dead:
            return ""
        return parse_explanation(self.chat.complete(explain_messages(examples, self.max_examples), self.max_tokens))

    def explain_many(self, many: Sequence[LatentExamples]) -> list[str | LLMError]:
        """Explanations of several latents, sent together (the chat model's batching / concurrency limit)."""
        live = [i for i, ex in enumerate(many) if not ex.is_dead]
        answers = self.chat.complete_many([explain_messages(many[i], self.max_examples) for i in live],
                                          self.max_tokens)
        out: list[str | LLMError] = [""] * len(many)
        for i, ans in zip(live, answers, strict=True):
            try:
                out[i] = ans if isinstance(ans, LLMError) else parse_explanation(ans)
            except LLMResponseError as e:
                out[i] = e
        return out


@dataclass(frozen=True)
class Item:
    """One scoring example: the text shown to the scorer LLM and the right answer (1 activating/correct, 0 not)."""

    text: str
    label: int


def spread(windows: Sequence[Window], n: int) -> list[Window]:
    """At most n windows spread evenly over the activation range (sorted by max, evenly spaced picks)."""
    ranked = sorted(windows, key=lambda w: -w.max)
    if len(ranked) <= n:
        return ranked
    return [ranked[round(i * (len(ranked) - 1) / (n - 1))] for i in range(n)] if n > 1 else ranked[:1]


def detection_items(examples: LatentExamples, n_pos: int = 10, n_neg: int = 10) -> list[Item]:
    """Unmarked held-out activating windows (label 1) and scoring windows with no active token (label 0)."""
    pos = spread([w for w in examples.held_out if w.max > 0], n_pos)
    neg = spread([w for w in examples.scoring if w.max <= 0], n_neg)
    return [Item(render(w), 1) for w in pos] + [Item(render(w), 0) for w in neg]


def fuzzing_items(examples: LatentExamples, rng: random.Random, n_pos: int = 10, n_neg: int = 10) -> list[Item]:
    """Held-out activating windows, alternately marked right (their active tokens, label 1) and wrong (as many
    random inactive tokens, label 0), plus near misses marked at their centre (label 0)."""
    items: list[Item] = []
    for j, w in enumerate(spread([w for w in examples.held_out if w.max > 0], 2 * n_pos)):
        act = active_positions(w)
        inactive = [i for i in range(len(w.tokens)) if i not in set(act)]
        if j % 2 == 0 or len(inactive) < len(act):
            items.append(Item(render(w, act), 1))
        else:
            items.append(Item(render(w, rng.sample(inactive, len(act))), 0))
    near = spread([w for w in examples.near if w.max <= 0 and w.tokens], n_neg)
    items += [Item(render(w, [w.center]), 0) for w in near]
    return items


def balanced_accuracy(labels: Sequence[int], preds: Sequence[int]) -> float | None:
    """(TPR + TNR) / 2; None when either class is missing (undefined)."""
    pos = [p for y, p in zip(labels, preds, strict=True) if y == 1]
    neg = [p for y, p in zip(labels, preds, strict=True) if y == 0]
    if not pos or not neg:
        return None
    return (sum(pos) / len(pos) + sum(1 - p for p in neg) / len(neg)) / 2


class _LLMScorer:
    """Shared loop: items → shuffled batches → prompts → parsed answers → measurements."""

    name = ""
    metrics = ("balanced_accuracy", "accuracy", "answered")  # the first marks a latent as scored (runner)

    def __init__(self, chat: ChatModel, batch_size: int = 5, n_pos: int = 10, n_neg: int = 10, seed: int = 0,
                 max_tokens: int = 60) -> None:
        if batch_size < 1 or n_pos < 1 or n_neg < 0:
            raise ValueError("batch_size and n_pos must be >= 1, n_neg >= 0")
        self.chat, self.batch_size, self.n_pos, self.n_neg = chat, batch_size, n_pos, n_neg
        self.seed, self.max_tokens = seed, max_tokens

    def items(self, examples: LatentExamples, rng: random.Random) -> list[Item]:
        raise NotImplementedError

    def messages(self, explanation: str, texts: Sequence[str]) -> list[dict[str, str]]:
        raise NotImplementedError

    def score(self, examples: LatentExamples, explanation: str) -> list[Measurement]:
        rng = random.Random(f"{self.name}:{self.seed}:{examples.latent}")
        items = self.items(examples, rng)
        rng.shuffle(items)
        if not items:
            return [Measurement("balanced_accuracy", None, 0), Measurement("accuracy", None, 0),
                    Measurement("answered", None, 0)]
        batches = [items[i:i + self.batch_size] for i in range(0, len(items), self.batch_size)]
        answers = self.chat.complete_many([self.messages(explanation, [it.text for it in b]) for b in batches],
                                          self.max_tokens)
        labels: list[int] = []
        preds: list[int] = []
        errors: list[str] = []
        for batch, ans in zip(batches, answers, strict=True):
            parsed = None if isinstance(ans, LLMError) else parse_labels(ans, len(batch))
            if parsed is None:
                errors.append(str(ans))
                continue
            labels += [it.label for it in batch]
            preds += parsed
        if not labels:
            first = next((a for a in answers if isinstance(a, LLMError)), None)
            if first is not None:
                raise first
            raise LLMResponseError(f"{self.name}: none of the scorer's {len(batches)} answers held a list of 0/1 "
                                   f"values (first: {errors[0][:200]!r})")
        correct = sum(int(y == p) for y, p in zip(labels, preds, strict=True))
        return [Measurement("balanced_accuracy", balanced_accuracy(labels, preds), len(labels)),
                Measurement("accuracy", correct / len(labels), len(labels)),
                Measurement("answered", len(labels) / len(items), len(items))]


class DetectionScorer(_LLMScorer):
    """delphi's detection: can the scorer LLM tell activating from non-activating contexts by the explanation?"""

    name = "detection"

    def items(self, examples: LatentExamples, rng: random.Random) -> list[Item]:
        return detection_items(examples, self.n_pos, self.n_neg)

    def messages(self, explanation: str, texts: Sequence[str]) -> list[dict[str, str]]:
        return detection_messages(explanation, texts)


class FuzzingScorer(_LLMScorer):
    """delphi's fuzzing: can the scorer LLM tell correctly from incorrectly marked tokens by the explanation?"""

    name = "fuzzing"

    def items(self, examples: LatentExamples, rng: random.Random) -> list[Item]:
        return fuzzing_items(examples, rng, self.n_pos, self.n_neg)

    def messages(self, explanation: str, texts: Sequence[str]) -> list[dict[str, str]]:
        return fuzzing_messages(explanation, texts)


def with_scorers(explainer: LLMExplainer, **options: Any) -> LLMExplainer:
    """The explainer, set to be scored by the model-free 'builtin' score and by detection and fuzzing on its own
    chat model (the scorer LLM is the explainer LLM)."""
    explainer.default_scorers = ["builtin", DetectionScorer(explainer.chat, **options),
                                 FuzzingScorer(explainer.chat, **options)]
    return explainer
