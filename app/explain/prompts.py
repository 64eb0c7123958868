"""Prompts for LLM explainers and scorers, and the parsers of their answers.

Highlighting follows delphi: a marked token is written `<<token>>`. The explainer sees each shown window with its
active tokens marked and, after the text, the marked tokens with their activation values; the scorers see plain
(detection) or marked (fuzzing) text and answer one 0/1 per example as a JSON list.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence

from app.explain.base import LatentExamples, Window
from app.explain.chat import LLMResponseError, Message

PROMPT_VERSION = "llm-1"  # change when a prompt changes, so `jumpscope explain` reruns the latents
MAX_EXPLANATION_CHARS = 200

EXPLAIN_SYSTEM = (
    "You explain latents of a sparse autoencoder trained on a language model's activations. You see text "
    "examples; tokens where the latent is active are marked <<like this>>, and after each example its marked "
    "tokens are listed with their activation values (higher = stronger). Find what the marked tokens have in "
    "common (the token itself, its meaning, or its context). Answer with one short phrase of at most 15 words, "
    "on a last line that starts with 'Explanation:'.")

DETECTION_SYSTEM = (
    "A latent of a language model is described by an explanation. You are shown numbered text examples. For each "
    "example, answer 1 if the latent is active somewhere in the example according to the explanation, else 0. "
    "Reply with only a JSON list of 0/1, one per example, e.g. [1, 0, 1].")

FUZZING_SYSTEM = (
    "A latent of a language model is described by an explanation. You are shown numbered text examples with some "
    "tokens marked <<like this>>. For each example, answer 1 if all marked tokens are ones the explanation "
    "describes (correctly marked), else 0. Reply with only a JSON list of 0/1, one per example, e.g. [1, 0, 1].")


def clean(token: str) -> str:
    """A token as prompt text: newlines shown as '\\n' so an example stays on one line."""
    return token.replace("\r", "\\r").replace("\n", "\\n")


def render(window: Window, marked: Iterable[int] = ()) -> str:
    """The window's text with the tokens at positions `marked` written as <<token>> (adjacent marks merge)."""
    mark = set(marked)
    out: list[str] = []
    for i, tok in enumerate(window.tokens):
        t = clean(tok)
        if i in mark:
            lead = len(t) - len(t.lstrip())  # keep the leading space outside the marks: '<<cat>>' not '<< cat>>'
            t = f"{t[:lead]}<<{t[lead:]}>>"
        out.append(t)
    return "".join(out).replace(">><<", "")


def active_positions(window: Window) -> list[int]:
    """Positions where the latent is active in the window."""
    return [i for i, v in enumerate(window.values) if v > 0]


def explain_example(n: int, window: Window) -> str:
    """One example for the explainer: marked text, then 'token (value)' of each active token, strongest first."""
    pos = active_positions(window)
    acts = sorted(pos, key=lambda i: -window.values[i])
    listed = ", ".join(f"{clean(window.tokens[i]).strip() or repr(window.tokens[i])} ({window.values[i]:.2f})"
                       for i in acts[:8])
    return f"Example {n}: {render(window, pos)}\nActivations: {listed or 'none'}"


def explain_messages(examples: LatentExamples, max_examples: int = 20, n_logits: int = 8) -> list[Message]:
    """The explainer's conversation for one latent: its shown windows (top first, then the activation intervals)."""
    shown = [w for w in examples.shown if w.max > 0][:max_examples]
    parts = [explain_example(i + 1, w) for i, w in enumerate(shown)]
    if examples.top_logits:
        promoted = ", ".join(clean(t).strip() or repr(t) for t, _ in examples.top_logits[:n_logits])
        parts.append(f"Tokens this latent makes more likely next: {promoted}")
    return [{"role": "system", "content": EXPLAIN_SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


def parse_explanation(answer: str) -> str:
    """The explanation in an explainer's answer: the text after the last 'Explanation:', else its last non-empty
    line; quotes and markdown stripped, capped at MAX_EXPLANATION_CHARS. LLMResponseError when nothing is left."""
    text = answer.strip()
    hits = list(re.finditer(r"explanation\s*:", text, flags=re.IGNORECASE))
    if hits:
        text = text[hits[-1].end():]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = (lines[0] if hits else lines[-1]) if lines else ""
    line = line.strip(" \t*_`").strip()
    if len(line) >= 2 and line[0] in "\"'“‘" and line[-1] in "\"'”’":  # a quoted phrase: drop the quote pair
        line = line[1:-1].strip()
    if not re.search(r"\w", line):
        raise LLMResponseError(f"the explainer's answer holds no explanation: {answer[:200]!r}")
    return line[:MAX_EXPLANATION_CHARS].rstrip()


def _numbered(texts: Sequence[str]) -> str:
    return "\n".join(f"Example {i + 1}: {t}" for i, t in enumerate(texts))


def detection_messages(explanation: str, texts: Sequence[str]) -> list[Message]:
    """Ask which of the (unmarked) example texts activate the latent described by `explanation`."""
    return [{"role": "system", "content": DETECTION_SYSTEM},
            {"role": "user", "content": f"Explanation: {explanation}\n\n{_numbered(texts)}\n\n"
                                        f"Answer with a JSON list of {len(texts)} values (0 or 1)."}]


def fuzzing_messages(explanation: str, texts: Sequence[str]) -> list[Message]:
    """Ask which of the marked example texts mark exactly tokens the explanation describes."""
    return [{"role": "system", "content": FUZZING_SYSTEM},
            {"role": "user", "content": f"Explanation: {explanation}\n\n{_numbered(texts)}\n\n"
                                        f"Answer with a JSON list of {len(texts)} values (0 or 1)."}]


_WORDS = {"yes": 1, "true": 1, "no": 0, "false": 0}


def parse_labels(answer: str, n: int) -> list[int] | None:
    """A scorer's n answers (0/1), or None when the answer does not hold exactly n of them.

    Accepted: a JSON list anywhere in the text ('[1, 0, 1]'); else the standalone 0/1 digits in order; for n == 1
    also a lone yes/no/true/false.
    """
    for m in re.finditer(r"\[[^\[\]]*\]", answer):
        try:
            vals = json.loads(m.group(0))
        except json.JSONDecodeError:
            continue
        if isinstance(vals, list) and len(vals) == n and all(v in (0, 1) and not isinstance(v, float) for v in vals):
            return [int(v) for v in vals]
    digits = re.findall(r"(?<![\w.])[01](?![\w.])", answer)
    if len(digits) == n:
        return [int(d) for d in digits]
    if n == 1:
        words = [_WORDS[w] for w in re.findall(r"[a-z]+", answer.lower()) if w in _WORDS]
        if len(set(words)) == 1:
            return [words[0]]
    return None
