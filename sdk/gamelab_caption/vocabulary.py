"""Caption tokenisation and the word vocabulary, shared by training and serving."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIAL_TOKENS = (PAD, START, END, UNK)  # PAD is id 0: masked out of the loss
# Words a caption may say twice without the beam search's repeat penalty ("a man in a red
# shirt"): a bundle lists its own in its manifest; older bundles get these.
REPEATABLE_WORDS = tuple("a an the in of on and with is are his her their its to at".split())
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(text: str) -> list[str]:
    """Lowercase and split into words; punctuation is dropped ("A dog's ball." -> a dog's ball)."""
    return _WORD.findall(text.lower())


class Vocabulary:
    """Word <-> id mapping with the four special tokens first.

    Args:
        words: the ordinary words, most frequent first; special tokens are added in front.
    """

    def __init__(self, words: Sequence[str]):
        duplicates = [w for w, n in Counter(words).items() if n > 1]
        if duplicates:
            raise ValueError(f"Vocabulary words must be unique; repeated: {duplicates[:5]}")
        clash = set(words) & set(SPECIAL_TOKENS)
        if clash:
            raise ValueError(f"Vocabulary words must not include special tokens: {sorted(clash)}")
        self.words: tuple[str, ...] = SPECIAL_TOKENS + tuple(words)
        self._ids = {word: index for index, word in enumerate(self.words)}
        self.pad_id, self.start_id, self.end_id, self.unk_id = range(4)
        # A caption never says "<unk>", and <pad>/<start> are inputs only.
        self.never_generated = (self.pad_id, self.start_id, self.unk_id)

    def __len__(self) -> int:
        return len(self.words)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.words == other.words

    @classmethod
    def build(
        cls, captions: Iterable[str], *, min_count: int = 1, max_words: int | None = None
    ) -> Vocabulary:
        """Count words in ``captions``; keep those seen ``min_count`` times, ``max_words`` at most.

        Ties in frequency are broken alphabetically so the result is deterministic.
        """
        counts = Counter(word for caption in captions for word in tokenize(caption))
        ranked = sorted(
            (w for w, n in counts.items() if n >= min_count and w not in SPECIAL_TOKENS),
            key=lambda w: (-counts[w], w),
        )
        return cls(ranked[:max_words] if max_words is not None else ranked)

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        """``<start> words... <end>`` as ids; unknown words map to ``<unk>``.

        ``max_length`` caps the number of words (specials excluded); longer captions are cut.
        """
        ids = [self._ids.get(word, self.unk_id) for word in tokenize(text)]
        if max_length is not None:
            ids = ids[:max_length]
        return [self.start_id, *ids, self.end_id]

    def known_ids(self, words: Iterable[str]) -> frozenset[int]:
        """The ids of those of ``words`` the vocabulary has."""
        return frozenset(self._ids[word] for word in words if word in self._ids)

    def decode(self, ids: Iterable[int]) -> str:
        """Ids to text, stopping at ``<end>``; ``<start>`` and ``<pad>`` are skipped."""
        words = []
        for index in ids:
            index = int(index)
            if index == self.end_id:
                break
            if index in (self.start_id, self.pad_id):
                continue
            words.append(self.words[index] if 0 <= index < len(self.words) else UNK)
        return " ".join(words)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"words": list(self.words)}, indent=0) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        words = json.loads(Path(path).read_text())["words"]
        if tuple(words[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"{path}: vocabulary must start with {SPECIAL_TOKENS}")
        return cls(words[len(SPECIAL_TOKENS) :])
