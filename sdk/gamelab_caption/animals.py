"""Name the animal the encoder's ImageNet classifier sees when the caption names another.

A decoder trained on Flickr8k calls most animals a dog: its vocabulary has no "cat", "cow" or
"elephant". The encoder's ImageNet head (1,000 classes, 398 of them animals) knows them. As
in the direct transfer of Deep Compositional Captioning (Hendricks et al. 2016), a word the
captions never taught is said where the decoder says a word of the same kind: when the
classifier gives one animal kind at least ``threshold`` of its probability and the caption
names animals of other kinds only, those words become that kind's word ("a brown and white
dog is playing with a ball" -> "a brown and white cat is playing with a ball"). Captions
without an animal word, that already name the kind seen or that name a breed or species
("greyhound", "swans") are left as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

IMAGENET_CLASSES = 1000


class Kind(NamedTuple):
    singular: str
    plural: str
    classes: tuple[int, ...]  # ImageNet-1k class indices (WordNet order)


def _span(first: int, last: int) -> tuple[int, ...]:
    return tuple(range(first, last + 1))


# ImageNet-1k's animal classes grouped by the word a caption would use. Wolves, foxes and
# hyenas (269-280) are left out: the classifier takes huskies in snow for wolves.
KINDS: tuple[Kind, ...] = (
    Kind("dog", "dogs", _span(151, 268)),
    Kind("cat", "cats", _span(281, 285)),
    Kind("lion", "lions", (291,)),
    Kind("tiger", "tigers", (292,)),
    Kind("leopard", "leopards", (288, 289)),
    Kind("cheetah", "cheetahs", (293,)),
    Kind("bear", "bears", _span(294, 297)),
    Kind("panda", "pandas", (388,)),
    Kind("bird", "birds", _span(7, 24) + _span(80, 100) + _span(127, 146)),
    Kind("horse", "horses", (339,)),
    Kind("zebra", "zebras", (340,)),
    Kind("pig", "pigs", (341, 342)),
    Kind("cow", "cows", (345,)),
    Kind("buffalo", "buffalo", (346, 347)),
    Kind("sheep", "sheep", (348, 349)),
    Kind("goat", "goats", (350,)),
    Kind("antelope", "antelopes", _span(351, 353)),
    Kind("camel", "camels", (354,)),
    Kind("llama", "llamas", (355,)),
    Kind("elephant", "elephants", (101, 385, 386)),
    Kind("monkey", "monkeys", _span(369, 384)),
    Kind("gorilla", "gorillas", (366,)),
    Kind("chimpanzee", "chimpanzees", (367,)),
    Kind("rabbit", "rabbits", _span(330, 332)),
    Kind("squirrel", "squirrels", (335,)),
    Kind("fish", "fish", _span(0, 6) + _span(389, 397)),
    Kind("turtle", "turtles", _span(33, 37)),
    Kind("lizard", "lizards", _span(38, 48)),
    Kind("crocodile", "crocodiles", (49, 50)),
    Kind("snake", "snakes", _span(52, 68)),
    Kind("frog", "frogs", _span(30, 32)),
)
# Words the decoder uses for a kind besides its two forms.
_ALSO = {"puppy": ("dog", False), "puppies": ("dog", True), "bull": ("cow", False)}
# A breed or species named is the decoder's own evidence, finer than the classifier's kind:
# such a caption is kept ("a greyhound dog is racing on a track" is not made a camel).
_PRECISE = frozenset(
    "greyhound greyhounds shepherd terrier terriers poodle poodles collie collies dalmatian "
    "dalmatians retriever retrievers labrador husky huskies spaniel beagle pug chihuahua "
    "pigeon pigeons swan swans duck ducks goose geese seagull seagulls".split()
)
_VOWELS = tuple("aeiou")


def _word_table() -> dict[str, tuple[int, bool]]:
    """Every animal word -> (its kind's index in KINDS, plural)."""
    index = {kind.singular: number for number, kind in enumerate(KINDS)}
    table = {}
    for number, kind in enumerate(KINDS):
        table[kind.plural] = (number, True)
        table[kind.singular] = (number, False)  # "sheep" and "fish": singular wins
    for word, (singular, plural) in _ALSO.items():
        table[word] = (index[singular], plural)
    return table


_WORDS = _word_table()
_MEMBERSHIP = np.zeros((IMAGENET_CLASSES, len(KINDS)), np.float32)
for _number, _kind in enumerate(KINDS):
    _MEMBERSHIP[list(_kind.classes), _number] = 1.0


def kind_probabilities(class_probabilities: np.ndarray) -> np.ndarray:
    """(..., 1000) ImageNet softmax -> (..., len(KINDS)) probability of each animal kind."""
    return class_probabilities @ _MEMBERSHIP


def name_animal(words: Sequence[str], kinds: np.ndarray, threshold: float) -> tuple[str, ...]:
    """``words`` with their animal words renamed to the kind the classifier sees, if any.

    Args:
        words: a caption's words.
        kinds: that image's ``kind_probabilities`` (len(KINDS),).
        threshold: the probability the most likely kind needs, in (0, 1].
    """
    seen = int(np.argmax(kinds))
    if kinds[seen] < threshold:
        return tuple(words)
    named = {_WORDS[word][0] for word in words if word in _WORDS}
    if not named or seen in named or not _PRECISE.isdisjoint(words):
        return tuple(words)
    kind = KINDS[seen]
    renamed = list(words)
    for position, word in enumerate(words):
        if word in _WORDS:
            renamed[position] = kind.plural if _WORDS[word][1] else kind.singular
            if position and renamed[position - 1] in ("a", "an"):
                renamed[position - 1] = "an" if renamed[position].startswith(_VOWELS) else "a"
    return tuple(renamed)
