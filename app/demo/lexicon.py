"""Word lists of the demo's synthetic world, one per lexical concept.

Every word of a list is used in exactly the same template slots, sampled uniformly, so the words of one
concept are interchangeable to the language model: the one thing they share is the concept. The lists are
disjoint, lower-case and short, so that a ~1k-token BPE learns each word as a single token.
"""

from __future__ import annotations

LEXICON: dict[str, tuple[str, ...]] = {
    "colour": ("red", "blue", "green", "yellow", "purple", "orange", "pink", "brown", "grey", "white"),
    "animal": ("cat", "dog", "horse", "rabbit", "fox", "mouse", "bird", "cow", "sheep", "goat"),
    "food": ("bread", "cheese", "apple", "soup", "cake", "rice", "pie", "honey", "pear", "jam"),
    "number": ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve"),
    "name": ("Anna", "Tom", "Maria", "Leo", "Sara", "Ben", "Nina", "Omar", "Lucy", "Jack"),
    "place": ("London", "Paris", "Rome", "Berlin", "Madrid", "Vienna", "Dublin", "Oslo", "Prague", "Lisbon"),
    "positive_emotion": ("happy", "glad", "proud", "calm", "cheerful", "joyful", "hopeful", "delighted"),
    "negative_emotion": ("sad", "angry", "afraid", "upset", "lonely", "nervous", "worried", "gloomy"),
    "weather": ("rain", "snow", "fog", "wind", "sunshine", "thunder", "hail", "frost"),
    "vehicle": ("car", "bus", "train", "boat", "bike", "truck", "plane", "ship"),
    "clothing": ("hat", "coat", "scarf", "shirt", "dress", "boots", "gloves", "jacket"),
    "weekday": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
}

# Filler words for the grammar: neutral nouns, verbs and determiners that carry no concept.
THINGS = ("box", "ball", "cup", "book", "door", "chair", "kite", "lamp", "bag", "bell")
VERBS_PAST = ("saw", "found", "liked", "painted", "carried", "wanted", "kept", "sold", "bought", "lost")
VERBS_BASE = ("see", "find", "like", "paint", "carry", "want", "keep", "sell", "buy", "lose")
LINKING_VERBS = ("was", "felt", "looked", "seemed", "became")
SPEECH_VERBS = ("said", "asked", "whispered", "shouted", "replied")
DETERMINERS = ("a", "the", "my", "her", "his", "one", "that", "every", "our")

LEXICAL_CONCEPTS: tuple[str, ...] = tuple(LEXICON)
STRUCTURAL_CONCEPTS: tuple[str, ...] = (
    "sentence_start",  # the first word of every sentence
    "quotation",  # the words between a pair of double quotes
    "question",  # every word of a sentence that ends with "?"
    "list_item",  # the text of a bulleted "- " list line
    "arithmetic_answer",  # the result after "=" in `3 + 4 = 7`
)
CONCEPTS: tuple[str, ...] = LEXICAL_CONCEPTS + STRUCTURAL_CONCEPTS


def concept_of_word(word: str) -> str | None:
    """The lexical concept a word belongs to, or None."""
    for concept, words in LEXICON.items():
        if word in words:
            return concept
    return None
