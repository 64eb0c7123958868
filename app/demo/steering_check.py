"""The report's steering check: clamping the colour latent makes generations talk about colours.

For each prompt, a default and a steered continuation are sampled with the same seed and settings
(`app.steering.steer`, SPEC §4 clamp at the SAE's hook, BOS untouched). The check compares the share of
generated tokens that are colour words.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.demo.lexicon import LEXICON

# Neutral openings in the world's style: none mentions a colour.
PROMPTS = ("Anna", "The cat", "On Monday,", "Leo ate the", "Did Maria", "In Paris", "Our list:", "Tom was",
           "The bus", "Nina wore her")


@dataclass
class SteeringCheck:
    """Colour-word counts of the default and steered generations, and their ratio of shares."""

    latent: int
    value: float
    default_colour: int
    default_tokens: int
    steered_colour: int
    steered_tokens: int
    examples: list[dict]

    @property
    def ratio(self) -> float:
        """(steered colour share) / (default colour share), each share add-one smoothed so 0/0 stays finite."""
        steered = (self.steered_colour + 1) / (self.steered_tokens + 1)
        default = (self.default_colour + 1) / (self.default_tokens + 1)
        return steered / default

    def to_json(self) -> dict:
        return {"latent": self.latent, "value": self.value, "ratio": self.ratio,
                "default_colour_share": self.default_colour / max(1, self.default_tokens),
                "steered_colour_share": self.steered_colour / max(1, self.steered_tokens),
                "default_tokens": self.default_tokens, "steered_tokens": self.steered_tokens,
                "examples": self.examples}


def is_colour(token: str) -> bool:
    """True when a decoded token is a colour word of the world (leading space and case ignored)."""
    return token.strip().lower() in LEXICON["colour"]


def steering_check(lm, sae, latent: int, value: float, n_prompts: int = 8, max_new_tokens: int = 64,
                   temperature: float = 1.0, seed: int = 0, n_examples: int = 2) -> SteeringCheck:
    """Generate default vs clamped continuations for `n_prompts` prompts and count colour words."""
    from app.steering import Intervention, steer

    counts = [0, 0, 0, 0]  # default colour, default tokens, steered colour, steered tokens
    examples: list[dict] = []
    for i in range(n_prompts):
        prompt = PROMPTS[i % len(PROMPTS)]
        result = steer(lm, sae, prompt, [Intervention(latent, "clamp", float(value))],
                       max_new_tokens=max_new_tokens, temperature=temperature, seed=seed + i)
        counts[0] += sum(is_colour(t) for t in result.default_tokens)
        counts[1] += len(result.default_tokens)
        counts[2] += sum(is_colour(t) for t in result.steered_tokens)
        counts[3] += len(result.steered_tokens)
        if len(examples) < n_examples:
            examples.append({"prompt": prompt, "default": result.default, "steered": result.steered})
    return SteeringCheck(latent, float(value), *counts, examples=examples)
