"""Prompts, answer parsing, the LLM explainer and the detection / fuzzing scores, with scripted chat models whose
answers follow a known rule, against balanced accuracies computed by hand."""

from __future__ import annotations

import itertools
import random
import re

import pytest

from app.explain.base import LatentExamples, Window
from app.explain.chat import LLMError, LLMResponseError, LLMUnreachable
from app.explain.llm import (
    DetectionScorer,
    FuzzingScorer,
    LLMExplainer,
    balanced_accuracy,
    detection_items,
    fuzzing_items,
    with_scorers,
)
from app.explain.prompts import explain_messages, parse_explanation, parse_labels, render


def win(text: str, acts: dict[int, float], kind: str = "top", center: int = 0) -> Window:
    toks = tuple(text.split("|"))
    return Window(toks, tuple(range(len(toks))), tuple(acts.get(i, 0.0) for i in range(len(toks))), center, kind)


class Scripted:
    """A chat model answering each numbered example with rule(example text) as a JSON list."""

    name = "scripted:rule"

    def __init__(self, rule, garbage_every: int = 0) -> None:
        self.rule, self.garbage_every, self.calls, self.prompts = rule, garbage_every, 0, []

    def complete(self, messages, max_tokens=200):
        self.calls += 1
        self.prompts.append(messages[-1]["content"])
        if self.garbage_every and self.calls % self.garbage_every == 0:
            return "I am not sure what you mean."
        texts = re.findall(r"^Example \d+: (.*)$", messages[-1]["content"], flags=re.M)
        return str([int(self.rule(t)) for t in texts])

    def complete_many(self, convs, max_tokens=200):
        out = []
        for c in convs:
            try:
                out.append(self.complete(c, max_tokens))
            except LLMError as e:
                out.append(e)
        return out


# A latent that fires on " cat": 4 held-out windows (3 with an active cat; one activates on " mat" instead),
# 2 near misses with no active token (one mentions a cat, inactive there).
HELD = (win("The| cat| sat", {1: 5.0}), win("A| cat| ran| home", {1: 3.0}, "interval"),
        win("my| cat| and| dog", {1: 1.0}, "interval"), win("on| the| mat", {2: 0.5}, "interval"))
NEAR = (win("no| cat| here", {}, "near", 1), win("the| dog| barked", {}, "near", 1))
EX = LatentExamples(latent=3, top=(win("The| cat| purred", {1: 4.0}),), held_out=HELD, near=NEAR,
                    top_logits=((" meow", 2.0),))


def test_render_marks_tokens_and_merges_neighbours():
    w = win("The| big| cat|\n|sat", {})
    assert render(w, [2]) == "The big <<cat>>\\nsat"
    assert render(w, [1, 2]) == "The <<big>> <<cat>>\\nsat"  # words stay apart, word pieces merge:
    assert render(win("The| big|gest", {}), [1, 2]) == "The <<biggest>>"
    assert render(w) == "The big cat\\nsat"


def test_explain_prompt_shows_marked_examples_with_values():
    msgs = explain_messages(EX)
    user = msgs[-1]["content"]
    assert "Example 1: The <<cat>> purred\nActivations: cat (4.00)" in user
    assert "meow" in user
    assert all(w.tokens[1] not in ("sat",) for w in EX.shown)  # held-out windows never reach the explainer
    assert "sat" not in user and "ran" not in user


@pytest.mark.parametrize("answer, expected", [
    ("Explanation: the word cat", "the word cat"),
    ("Thinking...\nThe examples all show cats.\nExplanation: **\"cat\" as a noun**", "\"cat\" as a noun"),
    ("cats and kittens", "cats and kittens"),
    ("explanation:\n  pets\n", "pets")])
def test_parse_explanation(answer, expected):
    assert parse_explanation(answer) == expected


@pytest.mark.parametrize("answer", ["", "   ", "Explanation: ***", "\n\n"])
def test_parse_explanation_garbage_is_a_clear_error(answer):
    with pytest.raises(LLMResponseError, match="no explanation"):
        parse_explanation(answer)


@pytest.mark.parametrize("answer, n, expected", [
    ("[1, 0, 1]", 3, [1, 0, 1]), ("Sure! The answer is [0,1] as asked.", 2, [0, 1]),
    ("1\n0\n1", 3, [1, 0, 1]), ("Example 1: 1, Example 2: 0", 2, None),  # digits of 'Example 1' count: ambiguous
    ("[1, 0]", 3, None), ("[1, 2, 0]", 3, None), ("[1.0, 0.0]", 2, None), ("yes", 1, [1]), ("No.", 1, [0]),
    ("yes and no", 1, None), ("garbage", 2, None), ("[true, false]", 2, [1, 0])])
def test_parse_labels(answer, n, expected):
    assert parse_labels(answer, n) == expected


def test_balanced_accuracy_matches_brute_force():
    rng = random.Random(1)
    for _ in range(50):
        n = rng.randint(2, 30)
        y = [rng.randint(0, 1) for _ in range(n)]
        p = [rng.randint(0, 1) for _ in range(n)]
        if len(set(y)) < 2:
            assert balanced_accuracy(y, p) is None
            continue
        tp = sum(a == b == 1 for a, b in zip(y, p))
        tn = sum(a == b == 0 for a, b in zip(y, p))
        assert balanced_accuracy(y, p) == pytest.approx((tp / y.count(1) + tn / y.count(0)) / 2)


def test_detection_items_use_only_held_out_and_inactive_windows():
    items = detection_items(EX)
    assert sorted((it.text, it.label) for it in items) == sorted(
        [("The cat sat", 1), ("A cat ran home", 1), ("my cat and dog", 1), ("on the mat", 1),
         ("no cat here", 0), ("the dog barked", 0)])
    assert all("<<" not in it.text for it in items)


@pytest.mark.parametrize("batch_size", [1, 2, 4, 6])
def test_detection_balanced_accuracy_by_hand(batch_size):
    # Rule "mentions cat": positives 3/4 right (the mat one is missed), negatives 1/2 right ("no cat here").
    chat = Scripted(lambda t: "cat" in t)
    got = {m.metric: m for m in DetectionScorer(chat, batch_size=batch_size).score(EX, "the word cat")}
    assert got["balanced_accuracy"].value == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert got["accuracy"].value == pytest.approx(4 / 6) and got["accuracy"].n == 6
    assert got["answered"].value == 1.0
    assert chat.calls == -(-6 // batch_size)
    assert all("Explanation: the word cat" in p for p in chat.prompts)


def test_detection_constant_answers_score_one_half():
    for const in (0, 1):
        got = {m.metric: m.value for m in DetectionScorer(Scripted(lambda t, c=const: c)).score(EX, "x")}
        assert got["balanced_accuracy"] == 0.5


def test_fuzzing_items_mark_right_and_wrong_tokens():
    items = fuzzing_items(EX, random.Random(0))
    marks = [(re.findall(r"<<(.*?)>>", it.text), it.label) for it in items]
    # held-out windows ranked by max: cat(5) right, cat(3) wrong, cat(1) right, mat(0.5) wrong; near misses: centre
    assert marks[0] == (["cat"], 1) and marks[2] == (["cat"], 1)
    assert marks[1][1] == 0 and marks[1][0] != ["cat"] and len(marks[1][0]) == 1
    assert marks[3][1] == 0 and marks[3][0] != ["mat"]
    assert marks[4:] == [(["cat"], 0), (["dog"], 0)]


def test_fuzzing_perfect_and_inverted_rules():
    def marks_cat(t):  # "the marked tokens are all 'cat'" — right except on the marked inactive cat of a near miss
        m = re.findall(r"<<(.*?)>>", t)
        return bool(m) and all(x.strip() == "cat" for x in m)

    got = {m.metric: m for m in FuzzingScorer(Scripted(marks_cat), batch_size=3).score(EX, "cat")}
    # labels: 1,0,1,0(mat wrong-marked),0(near cat),0(near dog); answers: 1,0,1,0,1,0 → TPR 2/2, TNR 3/4
    assert got["balanced_accuracy"].value == pytest.approx((1 + 3 / 4) / 2)
    assert got["accuracy"].value == pytest.approx(5 / 6)
    inv = {m.metric: m.value for m in FuzzingScorer(Scripted(lambda t: not marks_cat(t))).score(EX, "cat")}
    assert inv["balanced_accuracy"] == pytest.approx(1 - got["balanced_accuracy"].value)


def test_scores_are_deterministic_per_latent_and_shuffled():
    a, b = Scripted(lambda t: 1), Scripted(lambda t: 1)
    FuzzingScorer(a, batch_size=6).score(EX, "cat")
    FuzzingScorer(b, batch_size=6).score(EX, "cat")
    assert a.prompts == b.prompts
    order = re.findall(r"^Example \d+: (.*)$", a.prompts[0], flags=re.M)
    assert order != [it.text for it in fuzzing_items(EX, random.Random(0))]  # not in label order


def test_unparseable_batches_count_as_unanswered():
    chat = Scripted(lambda t: "cat" in t, garbage_every=2)  # every second prompt answers prose
    got = {m.metric: m for m in DetectionScorer(chat, batch_size=2).score(EX, "cat")}
    assert got["answered"].value == pytest.approx(4 / 6) and got["accuracy"].n == 4


def test_all_garbage_or_all_errors_fail_the_latent():
    with pytest.raises(LLMResponseError, match="none of the scorer's 3 answers"):
        DetectionScorer(Scripted(lambda t: 1, garbage_every=1), batch_size=2).score(EX, "cat")

    class Down(Scripted):
        def complete(self, messages, max_tokens=200):
            raise LLMUnreachable("endpoint down")

    with pytest.raises(LLMUnreachable, match="endpoint down"):
        DetectionScorer(Down(lambda t: 1)).score(EX, "cat")


def test_no_scoring_windows_gives_undefined_scores():
    got = DetectionScorer(Scripted(lambda t: 1)).score(LatentExamples(latent=0, top=EX.top), "cat")
    assert [(m.metric, m.value, m.n) for m in got] == [("balanced_accuracy", None, 0), ("accuracy", None, 0),
                                                        ("answered", None, 0)]


def test_llm_explainer_parses_and_skips_dead():
    class Says(Scripted):
        def complete(self, messages, max_tokens=200):
            self.prompts.append(messages[-1]["content"])
            return "The marked tokens are pets.\nExplanation: the word \"cat\""

    exp = with_scorers(LLMExplainer(Says(None)))
    assert exp.name == "scripted:rule"
    assert exp.explain(EX) == 'the word "cat"'
    assert exp.explain(LatentExamples(latent=9)) == ""
    assert exp.explain_many([EX, LatentExamples(latent=9), EX]) == ['the word "cat"', "", 'the word "cat"']
    assert [getattr(s, "name", s) for s in exp.default_scorers] == ["builtin", "detection", "fuzzing"]


def test_llm_explainer_garbage_is_an_error_per_latent():
    class Mumbles(Scripted):
        def complete(self, messages, max_tokens=200):
            return "..."

    exp = LLMExplainer(Mumbles(None))
    with pytest.raises(LLMResponseError):
        exp.explain(EX)
    out = exp.explain_many([EX, EX])
    assert all(isinstance(o, LLMResponseError) for o in out)


def test_spread_covers_the_activation_range():
    from app.explain.llm import spread

    ws = [win("a|b", {0: float(v)}) for v in range(1, 21)]
    picked = [w.max for w in spread(ws, 5)]
    assert picked[0] == 20 and picked[-1] == 1 and len(set(picked)) == 5
    assert list(itertools.pairwise(picked)) == sorted(itertools.pairwise(picked), reverse=True)
