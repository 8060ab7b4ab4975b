"""The SCST reward is pycocoevalcap's CIDEr-D with the corpus statistics held fixed."""

import numpy as np
import pytest

pytest.importorskip("pycocoevalcap")

from pycocoevalcap.cider.cider_scorer import CiderScorer  # noqa: E402

from gamelab_export.reward import CiderD  # noqa: E402

REFERENCES = [
    ["a dog runs on the grass", "a brown dog running in a field", "the dog is running"],
    ["two children play in the sand", "kids playing at the beach", "two kids in the sand"],
    ["a man rides a bike down a hill", "a cyclist on a mountain trail", "a man on a bike"],
    ["a woman sits on a bench", "a lady resting on a park bench", "a woman on a bench"],
]
CANDIDATES = [
    "a dog is running on the grass",
    "two children play on the beach",
    "a man on a bike",
    "a dog sits on a bench",
]


def test_scores_equal_pycocoevalcap_when_the_corpus_is_the_scored_set():
    scorer = CiderScorer(n=4, sigma=6.0)
    for candidate, references in zip(CANDIDATES, REFERENCES, strict=True):
        scorer += (candidate, references)
    _, expected = scorer.compute_score()
    reward = CiderD(REFERENCES)
    np.testing.assert_allclose(reward(range(4), CANDIDATES), expected, rtol=1e-12)


def test_document_frequencies_come_from_the_corpus_not_the_batch():
    reward = CiderD(REFERENCES)
    alone = reward([0], [CANDIDATES[0]])
    np.testing.assert_allclose(alone, reward(range(4), CANDIDATES)[:1], rtol=1e-12)
    # a caption of another image earns less than the image's own
    assert reward([0], [CANDIDATES[3]])[0] < alone[0]
    assert reward([0], [""])[0] == 0.0


def test_images_without_references_are_refused():
    with pytest.raises(ValueError, match="references"):
        CiderD([["a dog"], []])
