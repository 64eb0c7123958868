"""The synthetic world: seeded determinism, every concept present, spans that say what they cover."""

from __future__ import annotations

import re

from app.demo.lexicon import CONCEPTS, LEXICAL_CONCEPTS, LEXICON, STRUCTURAL_CONCEPTS, concept_of_word
from app.demo.world import concepts_present, generate_documents


def test_same_seed_same_documents_other_seed_differs():
    a, b, c = generate_documents(30, seed=7), generate_documents(30, seed=7), generate_documents(30, seed=8)
    assert [(d.text, d.spans) for d in a] == [(d.text, d.spans) for d in b]
    assert [d.text for d in a] != [d.text for d in c]


def test_at_least_fifteen_concepts_all_present():
    assert len(CONCEPTS) >= 15
    assert len(LEXICAL_CONCEPTS) >= 8 and len(STRUCTURAL_CONCEPTS) >= 5
    assert concepts_present(generate_documents(200, seed=0)) == set(CONCEPTS)


def test_lexicon_lists_are_disjoint():
    words = [w for ws in LEXICON.values() for w in ws]
    assert len(words) == len(set(words))
    assert concept_of_word("red") == "colour" and concept_of_word("box") is None


def test_spans_cover_what_their_concept_says():
    for doc in generate_documents(150, seed=3):
        for span in doc.spans:
            assert 0 <= span.start < span.end <= len(doc.text)
            piece = doc.text[span.start:span.end]
            if span.concept in LEXICON:
                assert piece in LEXICON[span.concept], (span.concept, piece)
            elif span.concept == "arithmetic_answer":
                expr = re.search(r"(\d+) ([+-]) (\d+) = $", doc.text[:span.start])
                assert expr, doc.text[:span.start]
                a, op, b = int(expr.group(1)), expr.group(2), int(expr.group(3))
                assert int(piece) == (a + b if op == "+" else a - b)
            elif span.concept == "quotation":
                assert doc.text[span.start - 1] == '"' and doc.text[span.end] == '"'
            elif span.concept == "question":
                assert piece.endswith("?")
            elif span.concept == "list_item":
                assert doc.text[span.start - 3:span.start] == "\n- "
            elif span.concept == "sentence_start":
                assert re.fullmatch(r"\w+", piece) and piece[0].isupper()


def _word_sequences(docs):
    """Each document as a list of (word, concept or None), punctuation kept as its own word."""
    for doc in docs:
        concept_at = {s.start: s.concept for s in doc.spans if s.concept in LEXICON}
        yield [(m.group(), concept_at.get(m.start())) for m in re.finditer(r"\w+|[^\w\s]", doc.text)]


def test_colours_are_topical_and_come_in_runs():
    docs = generate_documents(400, seed=4)
    coloured = sum(bool(d.words_of("colour")) for d in docs) / len(docs)
    assert 0.1 < coloured < 0.35  # a minority of stories is about colours; the others mention none
    after = [nxt for words in _word_sequences(docs) for (w, c), nxt in zip(words, words[1:]) if c == "colour"]
    assert after
    colour_next = sum(c == "colour" for _, c in after) / len(after)
    assert colour_next > 0.5  # a colour predicts another colour: what the steering check relies on
    assert "and" not in {w for w, _ in after}  # colours are never joined by "and" (that steered towards "and")


def test_emotion_words_keep_their_valence_context():
    from app.demo.world import VALENCE_ACTS, VALENCE_NOUNS

    docs = generate_documents(400, seed=6)
    for words in _word_sequences(docs):
        for i, (w, c) in enumerate(words):
            if c not in VALENCE_ACTS:
                continue
            other = next(v for v in VALENCE_ACTS if v != c)
            window = {x for x, _ in words[max(0, i - 3):i + 4]}
            assert window & (set(VALENCE_ACTS[c]) | set(VALENCE_NOUNS[c])), (w, words[i - 3:i + 4])
            assert not window & (set(VALENCE_ACTS[other]) | set(VALENCE_NOUNS[other]))
