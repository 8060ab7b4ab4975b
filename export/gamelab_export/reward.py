"""CIDEr-D as a training reward: each sampled caption scored against its image's references,
with the n-gram document frequencies of the whole training corpus.

pycocoevalcap's ``CiderScorer`` computes those frequencies from the captions it is given and
sets its corpus size inside ``compute_cider``, so on one batch of samples it would weigh
n-grams by that batch alone. Self-critical training (Rennie et al. 2017) rewards with the
corpus statistics fixed; this is the same formula (tf-idf n-gram vectors, n = 1..4, clipped
to the reference's counts, Gaussian length penalty sigma 6, x10) with them fixed, and with
the references' vectors computed once instead of at every call. ``tests/export/test_reward.py``
checks it against pycocoevalcap on a set scored as its own corpus.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

NGRAMS = 4
SIGMA = 6.0


def _ngrams(text: str, n: int = NGRAMS) -> Counter:
    words = text.split()
    return Counter(
        tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1)
    )


class CiderD:
    """CIDEr-D of candidate captions of known images.

    Args:
        references: per image, its reference captions, tokenised and joined by spaces
            (as ``" ".join(tokenize(caption))``). They are the corpus for document frequencies.
    """

    def __init__(self, references: Sequence[Sequence[str]]):
        if not references or any(not refs for refs in references):
            raise ValueError("CIDEr-D needs at least one image, each with references")
        counts = [[_ngrams(ref) for ref in refs] for refs in references]
        frequency = Counter(gram for refs in counts for gram in {g for ref in refs for g in ref})
        self._log_frequency = {gram: math.log(value) for gram, value in frequency.items()}
        self._log_images = math.log(len(references))
        self._references = [[self._vector(ref) for ref in refs] for refs in counts]

    def __len__(self) -> int:
        return len(self._references)

    def _vector(self, counts: Counter) -> tuple[list[dict], list[float], int]:
        """n-gram counts -> tf-idf weights per n, their norms, and the length (bigrams, as
        pycocoevalcap counts it)."""
        weights: list[dict] = [{} for _ in range(NGRAMS)]
        norms = [0.0] * NGRAMS
        length = 0
        for gram, count in counts.items():
            order = len(gram) - 1
            weight = count * (self._log_images - self._log_frequency.get(gram, 0.0))
            weights[order][gram] = weight
            norms[order] += weight * weight
            if order == 1:
                length += count
        return weights, [math.sqrt(norm) for norm in norms], length

    def __call__(self, images: Sequence[int], captions: Sequence[str]) -> np.ndarray:
        """CIDEr-D of ``captions[i]`` against the references of image ``images[i]``: (N,)."""
        scores = np.zeros(len(captions))
        for position, (image, caption) in enumerate(zip(images, captions, strict=True)):
            weights, norms, length = self._vector(_ngrams(caption))
            total = 0.0
            references = self._references[image]
            for ref_weights, ref_norms, ref_length in references:
                penalty = math.exp(-((length - ref_length) ** 2) / (2 * SIGMA**2))
                for order in range(NGRAMS):
                    if not norms[order] or not ref_norms[order]:
                        continue
                    ref = ref_weights[order]
                    overlap = sum(
                        min(weight, ref.get(gram, 0.0)) * ref.get(gram, 0.0)
                        for gram, weight in weights[order].items()
                    )
                    total += overlap / (norms[order] * ref_norms[order]) * penalty
            scores[position] = 10.0 * total / NGRAMS / len(references)
        return scores
