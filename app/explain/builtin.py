"""The built-in explainer (no LLM, offline, CPU) and its model-free score.

Explainer: what is enriched in a latent's shown windows versus the corpus sample (the pooled windows of all
latents, `ExampleSource.background`) — the tokens where it is active, and the n-gram just before them —
ranked by the log-odds ratio with an informative Dirichlet prior (Monroe, Colaresi & Quinn 2008), plus the
tokens its decoder direction promotes most (logit lens). The label is a short phrase in a fixed grammar:

    red, blue, green, yellow, grey …; after: the; next: blue, pink

  - the first part lists the activating tokens (most frequent first; "…" when more enriched ones exist),
  - `after:` (optional) the preceding tokens / bigrams most activations follow,
  - `next:` the tokens it raises most in the output (for reading only; never scored).
Token texts are shown stripped and lower-cased; one that is not a plain word is quoted: “?”.

Score (`BuiltinScorer`): the label read as a rule — the latent is predicted active at a token when the token
is one of the listed ones (and, with `after:`, follows one of those contexts). Precision and recall of that
rule over every token of the held-out and near-miss windows (never the shown ones). Any text can be scored
this way: without the grammar, all its words are the listed tokens.

Cost: each distinct token text is normalised once per explainer / scorer (`Norms`), and an item's z-score is
computed only while `_covering` still needs it (most frequent first), so a run over all latents costs a few ms
per latent.
"""

from __future__ import annotations

import math
import operator
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from app.explain.base import LatentExamples, Measurement, Window

PROMPT_VERSION = "builtin-1"
PRIOR_STRENGTH = 100.0  # α0 of the Dirichlet prior (pseudo-counts spread like the background)
MIN_Z = 1.96  # an item must be enriched at this z-score
MAX_TOKENS = 8  # activating tokens listed at most
TOKEN_COVER = 0.95  # list tokens until they cover this share of activations
CONTEXT_COVER = 0.8  # an `after:` context is given when ≤ 3 items cover this share of activations
MAX_CONTEXT = 3
N_LOGITS = 3
_ITEM = re.compile(r"“([^”]*)”|(\w+)")


def norm(token: str) -> str:
    """The key a token is counted and matched under: stripped, lower-case."""
    return token.strip().lower()


def render_item(key: str) -> str:
    """A key as written in a label: bare when it is a word, else in curly quotes."""
    return key if re.fullmatch(r"\w+", key) else f"“{key}”"


class Norms(dict):
    """Token text → `norm(text)`, each distinct text normalised once (a cache that lives as long as its owner)."""

    def __missing__(self, token: str) -> str:
        key = self[token] = norm(token)
        return key


def _z(f: float, b: float, f_total: float, bg_total: int, prior: float = PRIOR_STRENGTH) -> float:
    """z-scored log-odds ratio of one item: f of f_total in the foreground, b of bg_total in the background."""
    a = prior * max(b, 1) / max(bg_total, 1)
    delta = (math.log((f + a) / max(f_total + prior - f - a, 1e-9))
             - math.log((b + a) / max(bg_total + prior - b - a, 1e-9)))
    return delta / math.sqrt(1.0 / (f + a) + 1.0 / (b + a))


def log_odds_z(fg: Counter[str], bg: Counter[str], bg_total: int, prior: float = PRIOR_STRENGTH) -> dict[str, float]:
    """z-scored log-odds ratio of each foreground item vs the background, with an informative Dirichlet prior."""
    f_total = sum(fg.values())
    return {w: _z(f, bg.get(w, 0), f_total, bg_total, prior) for w, f in fg.items()}


def _covering(counts: Counter[str], bg: Mapping[str, float], bg_total: int, total: int, limit: int, cover: float
              ) -> tuple[list[str], float, bool]:
    """Enriched items (z of `log_odds_z` ≥ MIN_Z vs `bg`), most frequent first, until they cover `cover` of `total`
    (or `limit` items): (items, share covered, whether enriched items were left out).

    z is computed lazily: only for the items looked at before the list is full, and up to one enriched item past
    it (the one that says more exist).
    """
    f_total = sum(counts.values())
    chosen: list[str] = []
    covered, more = 0, False
    for w, f in counts.most_common():
        if not w or _z(f, bg.get(w, 0), f_total, bg_total) < MIN_Z:
            continue
        if len(chosen) == limit or (total and covered / total >= cover):
            more = True
            break
        chosen.append(w)
        covered += f
    return chosen, covered / total if total else 0.0, more


class BuiltinExplainer:
    """Labels a latent from enriched activating tokens, preceding n-grams and logit effects (see module doc)."""

    name = "builtin"
    prompt_version = PROMPT_VERSION

    def __init__(self, background: Counter[str]) -> None:
        self.bg = background
        self.bg_total = sum(background.values())
        self._bg_ngrams: dict[int, Counter[str]] = {}
        self.norms = Norms()

    @classmethod
    def from_token_counts(cls, counts: Counter[int], vocab: dict[int, str]) -> BuiltinExplainer:
        """From token-id counts (`ExampleSource.background()`) and the id → text vocabulary."""
        bg: Counter[str] = Counter()
        for t, c in counts.items():
            bg[norm(vocab[t])] += c
        return cls(bg)

    def explain(self, examples: LatentExamples) -> str:
        """The label, or "" when the latent has no active token in its shown windows."""
        return render(self.label(examples))

    def label(self, examples: LatentExamples) -> Label | None:
        """The parts of the label (None when no shown window has an active token)."""
        norms = self.norms
        at: list[str] = []  # the token at each activation, in window order
        before1: list[str] = []  # the token before it
        before2: list[str] = []  # the bigram before it ('on the')
        for w in examples.shown:
            active = [i for i, v in enumerate(w.values) if v > 0]
            if not active:
                continue
            keys = [norms[t] for t in w.tokens]
            at += [keys[i] for i in active]
            before1 += [keys[i - 1] for i in active if i >= 1]
            before2 += [keys[i - 2] + " " + keys[i - 1] for i in active if i >= 2]
        tokens = Counter(at)  # counted in order of first appearance (most_common's tie order)
        total = len(at)
        if not total:
            return None
        ctx = {1: Counter(before1), 2: Counter(before2)}
        items, _, more = _covering(tokens, self.bg, self.bg_total, total, MAX_TOKENS, TOKEN_COVER)
        context = self._context(ctx, set(items), total)
        if not items and not context:  # nothing enriched (a very dense latent): its most frequent tokens
            items, more = [w for w, _ in tokens.most_common(MAX_TOKENS) if w], len(tokens) > MAX_TOKENS
        nxt = [norm(t) for t, v in examples.top_logits[:N_LOGITS] if v > 0 and norm(t)]
        return Label(tuple(items), more, tuple(context), tuple(nxt))

    def _context(self, ctx: dict[int, Counter[str]], items: set[str], total: int) -> list[str]:
        """The longest preceding n-gram set (≤ MAX_CONTEXT items) that covers CONTEXT_COVER of activations."""
        for n in sorted(ctx, reverse=True):
            counts = Counter({k: c for k, c in ctx[n].items() if k.rsplit(" ", 1)[-1] not in items})
            chosen, covered, _ = _covering(counts, self._ngram_bg(n), self.bg_total, total, MAX_CONTEXT, CONTEXT_COVER)
            if chosen and covered >= CONTEXT_COVER:
                return chosen
        return []

    def _ngram_bg(self, n: int) -> Counter[str]:
        # Unigram background for n = 1; for bigrams, no pooled bigram counts exist, so the product of unigram
        # shares is the independence baseline (scaled to the same total).
        if n == 1:
            return self.bg
        return _IndependentBigrams(self.bg, self.bg_total)  # type: ignore[return-value]


class _IndependentBigrams(dict):
    """Expected bigram counts under independence: N · p(a) · p(b)."""

    def __init__(self, bg: Counter[str], total: int) -> None:
        super().__init__()
        self.bg, self.total = bg, max(total, 1)

    def get(self, key: str, default: float = 0) -> float:  # type: ignore[override]
        parts = key.split(" ")
        p = 1.0
        for part in parts:
            p *= self.bg.get(part, 0) / self.total
        return p * self.total


@dataclass(frozen=True)
class Label:
    """The parts of a built-in label: listed tokens, more-exist marker, preceding contexts, promoted tokens."""

    tokens: tuple[str, ...]
    more: bool = False
    after: tuple[str, ...] = ()
    next: tuple[str, ...] = ()


def render(label: Label | None) -> str:
    """The label as text (the grammar of the module doc); "" for None."""
    if label is None:
        return ""
    parts = [", ".join(render_item(t) for t in label.tokens) + (" …" if label.more else "")] if label.tokens else []
    if label.after:
        parts.append("after: " + ", ".join(render_item(t) for t in label.after))
    if label.next:
        parts.append("next: " + ", ".join(render_item(t) for t in label.next))
    return "; ".join(parts)


def parse(text: str) -> Label:
    """A label back from text: `after:` / `next:` parts by their prefix, the rest are the listed tokens."""
    tokens: list[str] = []
    after: list[str] = []
    nxt: list[str] = []
    for part in text.split(";"):
        part = part.strip()
        head, _, rest = part.partition(":")
        target, body = tokens, part
        if head.strip().lower() == "after" and rest:
            target, body = after, rest
        elif head.strip().lower() == "next" and rest:
            target, body = nxt, rest
        target += [(q if q else w).lower() for q, w in _ITEM.findall(body)]
    return Label(tuple(dict.fromkeys(tokens)), False, tuple(dict.fromkeys(after)), tuple(dict.fromkeys(nxt)))


def predict(label: Label, window: Window, norms: Mapping[str, str] | None = None) -> list[bool]:
    """Where the label's rule says the latent is active, per token of the window (`norms`: a `Norms` cache)."""
    toks, after = set(label.tokens), set(label.after)
    if not toks and not after:
        return [False] * len(window.tokens)
    keys = [norms[t] for t in window.tokens] if norms is not None else [norm(t) for t in window.tokens]
    if not after:
        return [key in toks for key in keys]
    sizes = sorted({len(a.split(" ")) for a in after})
    out = []
    for i, key in enumerate(keys):
        hit = key in toks if toks else True
        if hit and after:
            hit = any(i >= n and " ".join(keys[i - n:i]) in after for n in sizes)
        out.append(hit)
    return out


def precision_recall(label: Label, windows: Iterable[Window], norms: Mapping[str, str] | None = None
                     ) -> tuple[int, int, int]:
    """(true positives, predicted, actual) over every token of the windows."""
    tp = pred = act = 0
    for w in windows:
        active = [v > 0 for v in w.values]
        hits = predict(label, w, norms)
        if len(hits) != len(active):
            raise ValueError("a prediction per token is needed")
        act += sum(active)
        pred += sum(hits)
        tp += sum(map(operator.and_, hits, active))
    return tp, pred, act


class BuiltinScorer:
    """Precision / recall / F1 of a label's token rule on held-out and near-miss windows (see module doc)."""

    name = "builtin"

    def __init__(self) -> None:
        self.norms = Norms()

    def score(self, examples: LatentExamples, explanation: str) -> list[Measurement]:
        """Precision, recall and F1 of the explanation's rule on the held-out and near-miss windows."""
        return measure(parse(explanation), examples.scoring, self.norms)


def measure(label: Label, windows: Sequence[Window], norms: Mapping[str, str] | None = None) -> list[Measurement]:
    """The three metrics of a label on windows (None where undefined: nothing predicted / nothing active)."""
    tp, pred, act = precision_recall(label, windows, norms)
    precision = tp / pred if pred else None
    recall = tp / act if act else None
    f1 = 2 * tp / (pred + act) if pred + act else None
    return [Measurement("precision", precision, pred), Measurement("recall", recall, act),
            Measurement("f1", f1, sum(len(w.tokens) for w in windows))]
