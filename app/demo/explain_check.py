"""Ground truth for automatic explanations: does a concept latent's explanation name its concept or its members?

For each concept of the demo world, the report knows the latent that detects it best (`concept_match`). An
explanation *names* the concept when it contains every word of the concept's name (as a word prefix:
"colour" matches "colours", "positive_emotion" needs "positive" and "emotion"), or — for a lexical concept —
at least `MIN_MEMBERS` of its member words, which are also more than half of all the world's lexicon words it
mentions (so a label listing every colour *and* every animal names neither). Per explainer, the report gives the
share of lexical and of structural concepts whose latent's explanation names the concept.
"""

from __future__ import annotations

import os
import re
from contextlib import closing
from typing import Any

from app.demo.lexicon import LEXICAL_CONCEPTS, LEXICON

MIN_MEMBERS = 2
SYNONYMS = {"colour": ("color",), "place": ("city", "cities"), "weekday": ("day",), "vehicle": ("transport",)}


def _words(text: str) -> list[str]:
    return [w.lower() for w in re.findall(r"\w+", text)]


def _name_matches(words: list[str], concept: str) -> bool:
    parts = concept.split("_")
    if all(any(w.startswith(p) for w in words) for p in parts):
        return True
    return any(any(w.startswith(s) for w in words) for s in SYNONYMS.get(concept, ()))


def names_concept(text: str | None, concept: str) -> bool:
    """Whether `text` names `concept` or (lexical concepts) enough of its members (rule in the module doc)."""
    if not text:
        return False
    words = _words(text)
    if _name_matches(words, concept):
        return True
    if concept not in LEXICON:
        return False
    found = {c: {m.lower() for m in members} & set(words) for c, members in LEXICON.items()}
    own = len(found[concept])
    return own >= MIN_MEMBERS and own > sum(len(v) for v in found.values()) / 2


def explanation_shares(db_path: str | os.PathLike, concepts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per explainer stored in the index: {lexical_share, structural_share, named: {concept: bool}, text: {…}}.

    `concepts` is the report's concept table ({name: {"latent": i, …}}). Empty when the index has none.
    """
    from app.explain import store

    with closing(store.open_db(db_path, readonly=True)) as conn:
        rows = {(e.explainer, e.latent): e.text for e in store.list_explanations(conn) if e.source == "auto"}
    out: dict[str, Any] = {}
    for explainer in sorted({k[0] for k in rows}):
        named = {c: names_concept(rows.get((explainer, int(v["latent"]))), c) for c, v in concepts.items()}
        lexical = [named[c] for c in concepts if c in LEXICAL_CONCEPTS]
        structural = [named[c] for c in concepts if c not in LEXICAL_CONCEPTS]
        out[explainer] = {
            "lexical_share": sum(lexical) / len(lexical) if lexical else None,
            "structural_share": sum(structural) / len(structural) if structural else None,
            "named": named,
            "text": {c: rows.get((explainer, int(v["latent"]))) for c, v in concepts.items()},
        }
    return out
