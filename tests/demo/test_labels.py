"""Character-span labels mapped onto tokens line up with the words they label."""

from __future__ import annotations

import pytest

from app.demo.labels import label_batch, label_document
from app.demo.lexicon import CONCEPTS, LEXICON
from app.demo.world import Document, Span, generate_documents


@pytest.fixture(scope="module")
def world_tokenizer():
    from app.lm.tiny import train_tokenizer

    return train_tokenizer((d.text for d in generate_documents(400, seed=0)), vocab_size=1024)


def test_every_lexical_label_decodes_to_a_word_of_its_concept(world_tokenizer):
    docs = generate_documents(60, seed=11)
    seen = set()
    for doc in docs:
        lt = label_document(world_tokenizer, doc)
        assert lt.labels.shape == (len(lt.input_ids), len(CONCEPTS))
        assert not lt.labels[0].any()  # BOS carries nothing
        for concept, words in LEXICON.items():
            c = CONCEPTS.index(concept)
            for t in lt.labels[:, c].nonzero()[0]:
                token = world_tokenizer.decode([lt.input_ids[t]]).strip()
                assert any(token in w for w in words), (concept, token)
                seen.add(concept)
    assert seen == set(LEXICON)


def test_label_counts_match_spans(world_tokenizer):
    doc = generate_documents(1, seed=5)[0]
    lt = label_document(world_tokenizer, doc)
    for concept in LEXICON:  # lexicon words are single tokens in this vocabulary
        c = CONCEPTS.index(concept)
        assert lt.labels[:, c].sum() == len(doc.words_of(concept))


def test_structural_span_labels_every_overlapping_token(world_tokenizer):
    doc = Document('Tom said "the red cat sat" today.', [Span(10, 25, "quotation")])
    lt = label_document(world_tokenizer, doc, concepts=("quotation",), prepend_bos=False)
    tokens = [world_tokenizer.decode([i]) for i in lt.input_ids]
    labelled = "".join(t for t, on in zip(tokens, lt.labels[:, 0]) if on)
    assert labelled.strip() == "the red cat sat"


def test_label_batch_pads_with_empty_labels(world_tokenizer):
    docs = generate_documents(3, seed=2)
    ids, attn, labels = label_batch(world_tokenizer, docs)
    assert ids.shape == attn.shape == labels.shape[:2]
    assert not labels[attn == 0].any()
    assert (ids[:, 0] == world_tokenizer.bos_token_id).all()
