"""Captions as padded id arrays, built with the SDK's own vocabulary and tokeniser."""

from __future__ import annotations

import numpy as np

from gamelab_caption.vocabulary import Vocabulary

from .data import Example


def encode_captions(
    examples: list[Example], vocabulary: Vocabulary, max_words: int, skip: set[str] = frozenset()
) -> tuple[np.ndarray, np.ndarray]:
    """Every caption of every usable image.

    Returns:
        tokens (M, max_words + 2) int32, ``<start> ... <end>`` padded with 0, and
        rows (M,) int32: the index of each caption's image in ``examples``.
    """
    tokens, rows = [], []
    for row, example in enumerate(examples):
        if example.image_id in skip:
            continue
        for caption in example.captions:
            ids = vocabulary.encode(caption, max_words)
            tokens.append(ids + [vocabulary.pad_id] * (max_words + 2 - len(ids)))
            rows.append(row)
    return np.asarray(tokens, np.int32), np.asarray(rows, np.int32)
