"""The built-in explainer on hand-made windows, and its score against a brute force over the stored windows."""

from __future__ import annotations

import re
from collections import Counter

from app.explain.base import LatentExamples, Window
from app.explain.builtin import BuiltinExplainer, BuiltinScorer, parse, render
from app.explain.examples import ExampleSource
from app.index import service

COLOURS = ("red", "blue", "green", "pink")


def _window(words: list[str], fires) -> Window:
    toks = tuple(f" {w}" for w in words)
    return Window(toks, tuple(range(len(toks))), tuple(1.0 if fires(words, i) else 0.0 for i in range(len(words))),
                  len(words) // 2)


def _background() -> Counter[str]:
    bg = Counter({w: 400 for w in ("the", "a", "saw", "cat", "box", "and", "=", "7", "3", "+")})
    bg.update({c: 40 for c in COLOURS})
    return bg


def test_lexical_latent_lists_its_words_not_the_frame():
    frames = ("the", "a", "saw", "and", "cat", "box")  # what precedes a colour varies: no `after:` context
    sentences = [f"{p} {c} box and the cat".split() for c in COLOURS for p in frames]
    windows = tuple(_window(s, lambda ws, i: ws[i] in COLOURS) for s in sentences)
    text = BuiltinExplainer(_background()).explain(LatentExamples(1, top=windows))
    listed = set(parse(text).tokens)
    assert set(COLOURS) <= listed and not listed & {"the", "box", "a", "cat", "and"}
    assert "after" not in text


def test_context_latent_names_what_precedes():
    rows = [f"3 + {a} = {b} and".split() for a in ("7", "3", "saw", "cat") for b in ("7", "3", "box", "a", "cat")]
    windows = tuple(_window(s, lambda ws, i: i > 0 and ws[i - 1] == "=") for s in rows)
    label = parse(BuiltinExplainer(_background()).explain(LatentExamples(2, top=windows)))
    assert label.after == ("=",)


def test_dead_latent_gets_no_text():
    assert BuiltinExplainer(_background()).explain(LatentExamples(3)) == ""


def test_render_parse_round_trip():
    from app.explain.builtin import Label

    label = Label(("red", "?\"", "don't"), True, ("=", "on the"), ("blue",))
    text = render(label)
    assert text == "red, “?\"”, “don't” …; after: “=”, “on the”; next: blue"
    back = parse(text)
    assert (back.tokens, back.after, back.next) == (label.tokens, label.after, label.next)
    assert parse("Colour words: red, Blue").tokens == ("colour", "words", "red", "blue")  # free text: all words


def _brute(text: str, windows: list[dict]) -> tuple[int, int, int]:
    """TP, predicted, active over all tokens, written from the label grammar independently of app.explain."""
    parts = {"": [], "after": [], "next": []}
    for part in text.split(";"):
        m = re.match(r"\s*(after|next):(.*)", part)
        key, body = (m.group(1), m.group(2)) if m else ("", part)
        parts[key] += [(q or w).lower() for q, w in re.findall(r"“([^”]*)”|(\w+)", body)]
    tp = pred = act = 0
    for w in windows:
        toks = [t.strip().lower() for t in w["tokens"]]
        for i, t in enumerate(toks):
            p = t in parts[""]
            if parts["after"]:
                p = p and any(" ".join(toks[max(0, i - len(a.split())):i]) == a and i >= len(a.split())
                              for a in parts["after"])
            a = w["values"][i] > 0
            tp, pred, act = tp + (p and a), pred + p, act + a
    return tp, pred, act


def test_score_equals_brute_force_on_held_out_windows(explain_index):
    """Precision/recall from the scorer == a brute force over the windows the dashboard shows, held-out split
    (every third top and interval window from the second on) plus the near misses."""
    db = explain_index / "index.db"
    checked = 0
    with ExampleSource(db) as src:
        explainer = BuiltinExplainer.from_token_counts(src.background(), src.vocab)
        for latent in src.alive_latents():
            ex = src.get(latent)
            text = explainer.explain(ex)
            d = service.latent_dashboard(db, latent)
            interval = [e for iv in d["interval_examples"] for e in iv["examples"]]
            held = d["top_examples"][1::3] + interval[1::3] + d["near_misses"]
            shown = [e for k, e in enumerate(d["top_examples"]) if k % 3 != 1]
            assert [list(w.tokens) for w in ex.top] == [e["tokens"] for e in shown]  # the explainer saw no held-out
            tp, pred, act = _brute(text, held)
            got = {m.metric: m for m in BuiltinScorer().score(ex, text)}
            assert got["precision"].n == pred and got["recall"].n == act
            assert got["precision"].value == (tp / pred if pred else None)
            assert got["recall"].value == (tp / act if act else None)
            checked += act > 0
    assert checked >= 5
