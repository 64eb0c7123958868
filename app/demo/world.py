"""A seeded generator of short English-like stories whose every character span carries ground-truth labels.

A document mixes narrative sentences, dialogue in double quotes, questions, bulleted lists and simple
arithmetic. Lexical concepts (colours, animals, …) label the words drawn from `LEXICON`; structural concepts
label spans of text (`quotation`, `question`, `list_item`, `arithmetic_answer`, `sentence_start`). Labels are
kept as character spans; `app.demo.labels` maps them onto tokens through the tokenizer's offsets.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from app.demo.lexicon import (
    CONCEPTS,
    DETERMINERS,
    LEXICON,
    LINKING_VERBS,
    SPEECH_VERBS,
    THINGS,
    VERBS_BASE,
    VERBS_PAST,
)


@dataclass(frozen=True)
class Span:
    """Characters [start, end) of a document's text carry `concept`."""

    start: int
    end: int
    concept: str


@dataclass
class Document:
    """One generated text and its labelled character spans."""

    text: str
    spans: list[Span] = field(default_factory=list)

    def words_of(self, concept: str) -> list[str]:
        """The text of every span labelled `concept` (handy for tests and debugging)."""
        return [self.text[s.start:s.end] for s in self.spans if s.concept == concept]


# Sentences come from a small grammar (`_Grammar`) built on three rules, each measured against the SAE's
# concept F1 (docs/demo.md):
# - every concept word appears in many sentence shapes, and the words before a slot are mostly shared across
#   concepts ("the" precedes animals, foods, vehicles, clothes …), so a latent cannot be "concept in slot S";
# - what FOLLOWS a word depends on its concept (an animal barks, a weekday has a morning, a place has a
#   station, a positive emotion makes one smile), so the LM must carry the concept at the word itself;
# - colours are topical and come in runs: a fifth of the stories are colourful (colour patterns such as
#   "the lights blinked red green red blue", some coloured nouns), the rest have none, and a colour is never
#   followed by "and" — so "a colour is here" predicts another colour (the steering check).
NOUNS = ("animal", "food", "vehicle", "clothing", "thing")
NOUN_VERBS = {
    "animal": ("fed", "chased", "petted", "followed"),
    "food": ("ate", "cooked", "tasted", "shared"),
    "vehicle": ("drove", "rode", "parked", "fixed"),
    "clothing": ("wore", "washed", "folded", "mended"),
    "thing": VERBS_PAST,
}
NOUN_TAILS = {
    "animal": ("slept", "ran away", "barked", "hid"),
    "food": ("tasted good", "went cold", "smelled sweet"),
    "vehicle": ("drove off", "broke down", "honked"),
    "clothing": ("fit well", "got wet", "was torn"),
    "thing": ("fell over", "was new", "stood there"),
}
# An emotion is preceded and followed by its valence's actions: "smiled and felt glad", "felt sad and cried".
VALENCE_ACTS = {"positive_emotion": ("smiled", "laughed", "cheered", "sang"),
                "negative_emotion": ("cried", "frowned", "sighed", "wept")}
VALENCE_NOUNS = {"positive_emotion": ("smile", "grin", "laugh", "cheer"),  # "a glad smile", "a sad frown"
                 "negative_emotion": ("frown", "sigh", "tear", "groan")}
EMOTIONS = tuple(VALENCE_ACTS)
PLACE_PREPS = ("in", "to", "from", "near", "around")
PLACE_NOUNS = ("station", "market", "zoo", "museum", "park")  # "the Paris station": a place names a spot
WEEKDAY_PREPS = ("on", "by", "until", "every", "since")
DAY_PARTS = ("morning", "evening", "night", "afternoon")  # "on Monday morning"
NAME_PREPS = ("with", "for", "beside", "like")
WEATHER_VERBS = ("fell", "stopped", "passed", "lasted")  # what weather does: "while the snow fell"
WEATHER_PHRASES = ("in the {weather}", "while the {weather} {weather_verb}", "after the {weather} {weather_verb}",
                   "until the {weather} {weather_verb}")
LIST_INTROS = ("{name} packed:", "To buy on {weekday}:", "Things seen in {place}:", "Our list:")
COLOUR_LIST_INTRO = "In the {colour} bag:"
ARITHMETIC_INTROS = ("{name} counted:", "On the board:", "The {animal} learned that", "In {place} we wrote")
# Colour patterns: colour after colour ("the lights blinked red green red"), so a colour predicts a colour.
COLOUR_PATTERNS = ("The lights blinked", "The beads went", "The stripes were", "{name} painted the wall",
                   "The kite had stripes of")

_SLOT = re.compile(r"(\{\w+\})")
_FILLERS = {"thing": THINGS, "verb": VERBS_PAST, "verb_base": VERBS_BASE, "speech": SPEECH_VERBS,
            "linking": LINKING_VERBS, "weather_verb": WEATHER_VERBS}


class _Grammar:
    """Random templates ("{slot}" words, literal text) for noun phrases, clauses and questions.

    `colourful` is the story's topic switch: colours appear only in colourful stories, and often there.
    """

    def __init__(self, rng: random.Random, colourful: bool = False) -> None:
        self.rng = rng
        self.colourful = colourful

    def colours(self) -> str:
        """"" or (in a colourful story, sometimes) one colour adjective before a noun."""
        if not self.colourful or self.rng.random() < 0.7:
            return ""
        return "{colour} "

    def colour_sentence(self) -> str:
        """A pattern of 4-8 colours in a row (no "and" between: a colour is followed by a colour)."""
        return self.rng.choice(COLOUR_PATTERNS) + " {colour}" * self.rng.randint(4, 8) + "."

    def noun_phrase(self, capital: bool = False, noun: str | None = None) -> str:
        r = self.rng
        noun = noun or r.choice(NOUNS)
        slot = "{" + noun + "}"
        if noun != "thing" and r.random() < 0.3:  # the concept's own follower, in any slot
            slot += " that " + r.choice(NOUN_TAILS[noun])
        adj = self.colours()
        if r.random() < 0.15 and not capital:  # number words stay lower-case: never sentence-initial
            return f"{{number}} of the {adj}{slot}"
        if r.random() < 0.15:  # a name's own follower: the possessive
            return f"{{name}}'s {adj}{slot}"
        det = r.choice(DETERMINERS)
        return f"{det.capitalize() if capital else det} {adj}{slot}"

    def person(self) -> str:
        """A name, sometimes two ("Anna and Tom"); possessives ("Anna's cat") come from `noun_phrase`."""
        r = self.rng.random()
        if r < 0.2:
            return "{name} and {name}"
        return "{name}"

    def subject(self, capital: bool = True) -> str:
        return self.person() if self.rng.random() < 0.4 else self.noun_phrase(capital=capital, noun="animal")

    def adverbial(self) -> str:
        r, kind = self.rng, self.rng.choice(("place", "weekday", "name", "weather"))
        if kind == "place":
            if r.random() < 0.4:
                return f" at the {{place}} {r.choice(PLACE_NOUNS)}"
            if r.random() < 0.3:
                return " from {place} to {place}"
            return f" {r.choice(PLACE_PREPS)} {{place}}"
        if kind == "weekday":
            tail = f" {r.choice(DAY_PARTS)}" if r.random() < 0.6 else ""
            return f" {r.choice(WEEKDAY_PREPS)} {{weekday}}{tail}"
        if kind == "name":
            return f" {r.choice(NAME_PREPS)} {self.person()}"
        return " " + r.choice(WEATHER_PHRASES)

    def adverbials(self, most: int = 2) -> str:
        return "".join(self.adverbial() for _ in range(self.rng.randint(0, most)))

    def emotion(self) -> str:
        """A feeling with its valence's action or look right before or after it."""
        r = self.rng
        valence = r.choice(EMOTIONS)
        act = r.choice(VALENCE_ACTS[valence])
        x = r.random()
        if x < 0.25:
            return f"{act} and {{linking}} {{{valence}}}"
        if x < 0.5:
            return f"{{linking}} {{{valence}}} and {act}"
        return f"gave a {{{valence}}} {r.choice(VALENCE_NOUNS[valence])}"

    def predicate(self) -> str:
        r = self.rng.random()
        if r < 0.5:
            noun = self.rng.choice(NOUNS)
            return f"{self.rng.choice(NOUN_VERBS[noun])} {self.noun_phrase(noun=noun)}"
        if r < 0.6:
            return f"{{verb}} {self.person()}"
        if r < 0.85:
            if self.colourful and self.rng.random() < 0.2:
                return "{linking} {colour}"
            return self.emotion()
        return "went" + self.adverbial()

    def clause(self) -> str:
        r = self.rng.random()
        if r < 0.3:  # a noun as the subject, with a tail that only it takes
            noun = self.rng.choice(NOUNS)
            tail = self.rng.choice(NOUN_TAILS[noun])
            return f"{self.noun_phrase(capital=True, noun=noun)} {tail}{self.adverbials(1)}"
        if r < 0.38:
            return f"The {{weather}} {self.rng.choice(('came', 'cleared', 'returned'))}{self.adverbials(1)}"
        if r < 0.44:
            valence = self.rng.choice(EMOTIONS)
            return (f"{{weekday}} {self.rng.choice(DAY_PARTS)} was {{{valence}}} and we "
                    f"{self.rng.choice(VALENCE_ACTS[valence])}")
        if r < 0.5:
            return f"{{place}} {self.rng.choice(PLACE_NOUNS)} was {self.rng.choice(('busy', 'quiet', 'closed'))}"
        return f"{self.subject()} {self.predicate()}{self.adverbials()}"

    def question(self) -> str:
        r = self.rng.random()
        if r < 0.35:
            return f"Did {self.subject(False)} {{verb_base}} {self.noun_phrase()}{self.adverbials(1)}?"
        if r < 0.55:
            return f"Where is {self.noun_phrase()}?"
        if r < 0.75:
            valence = self.rng.choice(EMOTIONS)
            return f"Why was {self.subject(False)} so {{{valence}}} and {self.rng.choice(VALENCE_ACTS[valence])}?"
        return f"Who {{verb}} {self.noun_phrase()}{self.adverbials(1)}?"


class _Writer:
    """Appends text to a document while recording the spans of what it writes."""

    def __init__(self, rng: random.Random, colourful: bool = False) -> None:
        self.rng = rng
        self.grammar = _Grammar(rng, colourful)
        self.parts: list[str] = []
        self.length = 0
        self.spans: list[Span] = []

    def write(self, text: str, concept: str | None = None) -> tuple[int, int]:
        start = self.length
        self.parts.append(text)
        self.length += len(text)
        if concept and text:
            self.spans.append(Span(start, self.length, concept))
        return start, self.length

    def mark(self, start: int, end: int, concept: str) -> None:
        self.spans.append(Span(start, end, concept))

    def fill(self, template: str) -> tuple[int, int]:
        """Write a template, drawing each slot; lexical slots are labelled with their concept."""
        start = self.length
        for piece in _SLOT.split(template):
            if piece.startswith("{") and piece.endswith("}"):
                slot = piece[1:-1]
                if slot in LEXICON:
                    self.write(self.rng.choice(LEXICON[slot]), slot)
                else:
                    self.write(self.rng.choice(_FILLERS[slot]))
            else:
                self.write(piece)
        return start, self.length

    def sentence(self, template: str) -> None:
        """A top-level sentence: its first word is a `sentence_start`; a '?' ending makes it a `question`."""
        start, end = self.fill(template)
        self._mark_first_word(start)
        if template.endswith("?"):
            self.mark(start, end, "question")

    def _mark_first_word(self, start: int) -> None:
        text = "".join(self.parts)
        m = re.match(r"[\w]+", text[start:])
        if m:
            self.mark(start, start + m.end(), "sentence_start")

    def dialogue(self) -> None:
        """'"Quoted words," said Name.' — quoted questions are both `quotation` and `question`."""
        question = self.rng.random() < 0.35
        self.write('"')
        q_start = self.length
        if question:
            self.fill(self.grammar.question())
        else:
            self.fill(self.grammar.clause() + ",")
        self.mark(q_start, self.length, "quotation")
        if question:
            self.mark(q_start, self.length, "question")
        self._mark_first_word(q_start)
        self.write('" ')
        self.fill("{speech} {name}.")

    def bullet_list(self) -> None:
        """An intro line, then 2-4 lines of "- item"; each item's text is a `list_item`."""
        intros = LIST_INTROS + ((COLOUR_LIST_INTRO,) if self.grammar.colourful else ())
        start, _ = self.fill(self.rng.choice(intros))
        self._mark_first_word(start)
        for _ in range(self.rng.randint(2, 4)):
            self.write("\n- ")
            self.mark(*self.fill(self.grammar.noun_phrase()), "list_item")
        self.write("\n")

    def arithmetic(self) -> None:
        """'Intro 3 + 4 = 7.' — the result after '=' is an `arithmetic_answer`."""
        start, _ = self.fill(self.rng.choice(ARITHMETIC_INTROS))
        self._mark_first_word(start)
        a, b = self.rng.randint(1, 9), self.rng.randint(1, 9)
        if self.rng.random() < 0.5:
            self.write(f" {a} + {b} = ")
            self.write(str(a + b), "arithmetic_answer")
        else:
            a, b = max(a, b), min(a, b)
            self.write(f" {a} - {b} = ")
            self.write(str(a - b), "arithmetic_answer")
        self.write(".")

    def document(self) -> Document:
        text = "".join(self.parts)
        return Document(text, sorted(self.spans, key=lambda s: (s.start, s.end, s.concept)))


COLOURFUL_SHARE = 0.2  # stories about colours; the others mention none
# Kinds of passage and their weights in a document.
_PASSAGES = (("narrative", 6), ("dialogue", 2), ("question", 2), ("list", 1), ("arithmetic", 1))


def generate_document(rng: random.Random, min_passages: int = 3, max_passages: int = 7) -> Document:
    """One short story of several passages, separated by spaces or, around lists, newlines."""
    w = _Writer(rng, colourful=rng.random() < COLOURFUL_SHARE)
    kinds = [k for k, _ in _PASSAGES]
    weights = [wt for _, wt in _PASSAGES]
    for i in range(rng.randint(min_passages, max_passages)):
        kind = rng.choices(kinds, weights)[0]
        if i and not "".join(w.parts[-1:]).endswith("\n"):
            w.write("\n" if kind == "list" else " ")
        if kind == "narrative":
            colours = w.grammar.colourful and rng.random() < 0.6
            w.sentence(w.grammar.colour_sentence() if colours else w.grammar.clause() + ".")
        elif kind == "question":
            w.sentence(w.grammar.question())
        elif kind == "dialogue":
            w.dialogue()
        elif kind == "list":
            w.bullet_list()
        else:
            w.arithmetic()
    doc = w.document()
    doc.text = doc.text.rstrip("\n")
    doc.spans = [s for s in doc.spans if s.end <= len(doc.text)]
    return doc


def generate_documents(n: int, seed: int = 0) -> list[Document]:
    """`n` documents, the same for the same seed."""
    return list(iter_documents(n, seed))


def iter_documents(n: int, seed: int = 0) -> Iterator[Document]:
    """Lazily generate `n` documents from one seeded random stream."""
    if n < 0:
        raise ValueError(f"number of documents must be >= 0, got {n}")
    rng = random.Random(seed)
    for _ in range(n):
        yield generate_document(rng)


def concepts_present(docs: list[Document]) -> set[str]:
    """Which of the known concepts label at least one span in `docs`."""
    return {s.concept for d in docs for s in d.spans} & set(CONCEPTS)


def write_docs(path: str | os.PathLike, docs: list[Document], with_spans: bool = False) -> None:
    """JSONL, one document per line: `text` (read by app.lm.corpus) and optionally `spans`."""
    with open(path, "w", encoding="utf-8") as fh:
        for d in docs:
            row: dict = {"text": d.text}
            if with_spans:
                row["spans"] = [[s.start, s.end, s.concept] for s in d.spans]
            fh.write(json.dumps(row) + "\n")


def read_docs(path: str | os.PathLike) -> list[Document]:
    """Documents with spans written by `write_docs(..., with_spans=True)`."""
    docs = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            docs.append(Document(row["text"], [Span(int(a), int(b), str(c)) for a, b, c in row.get("spans", [])]))
    return docs
