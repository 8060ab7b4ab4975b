"""Caption metrics through pycocoevalcap; the scoring tests need Java (each call ~7 s: METEOR)."""

from __future__ import annotations

import shutil

import pytest

from gamelab_export.metrics import METRICS, markdown_table, score_captions

needs_java = pytest.mark.skipif(
    shutil.which("java") is None,
    reason="pycocoevalcap's tokenizer and METEOR need Java: apt-get install default-jre-headless",
)

# Real Flickr8k references (test split).
REFERENCES = {
    "1056338697_4f7d7ce270.jpg": [
        "A blond woman in a blue shirt appears to wait for a ride .",
        "A blond woman is on the street hailing a taxi .",
        "A woman is signaling is to traffic , as seen from behind .",
        "The woman in the blue dress is holding out her arm at oncoming traffic .",
    ],
    "1012212859_01547e3f17.jpg": [
        "A dog shakes its head near the shore , a red ball next to it .",
        "A white dog shakes on the edge of a beach with an orange ball .",
        "Dog with orange ball at feet , stands on shore shaking off water",
        "White dog playing with a red ball on the shore near the water .",
    ],
    "1022454332_6af2c1449a.jpg": [
        "A man and a woman sit on a bench\r\nlooking at the city skyline .",  # line break
        "Two people are at the edge of a lake , facing the water and the city skyline .",
        "A couple sits on the grass overlooking a lake and a city .",
    ],
}
RIGHT = {
    "1056338697_4f7d7ce270.jpg": "A woman in a blue shirt is waving at traffic on the street .",
    "1012212859_01547e3f17.jpg": "A white dog with an orange ball shakes off water on the shore .",
    "1022454332_6af2c1449a.jpg": "Two people sit by a lake looking at the city skyline .",
}
WRONG = {
    "1056338697_4f7d7ce270.jpg": "A black dog is running through the snow .",
    "1012212859_01547e3f17.jpg": "A group of men are playing rugby .",
    "1022454332_6af2c1449a.jpg": "A little girl rides a tricycle .",
}


@pytest.fixture(scope="module")
def scores() -> dict[str, dict[str, float]]:
    pytest.importorskip("pycocoevalcap", reason="pip install 'gamelab-caption-sdk[export]'")
    identical = {image: references[1] for image, references in REFERENCES.items()}
    return {
        name: score_captions(REFERENCES, candidates)
        for name, candidates in (("identical", identical), ("right", RIGHT), ("wrong", WRONG))
    }


@needs_java
def test_identical_candidates_score_full_bleu_and_high_cider(scores):
    identical = scores["identical"]

    assert list(identical) == list(METRICS)
    # 100 also shows the line break in one reference did not shift captions between images.
    assert identical["BLEU-4"] == pytest.approx(100.0, abs=1e-3)
    assert identical["METEOR"] == pytest.approx(100.0, abs=1e-3)
    assert identical["ROUGE-L"] == pytest.approx(100.0, abs=1e-3)
    assert identical["CIDEr"] > 200.0


@needs_java
def test_wrong_captions_score_lower_than_right_ones(scores):
    right, wrong = scores["right"], scores["wrong"]

    for metric in METRICS:
        assert 0.0 <= wrong[metric] < right[metric], metric
    assert right["BLEU-1"] <= 100.0 and right["CIDEr"] > 2 * wrong["CIDEr"]


@needs_java
def test_dead_meteor_process_raises_instead_of_hanging(monkeypatch: pytest.MonkeyPatch):
    meteor = pytest.importorskip("pycocoevalcap.meteor.meteor")
    monkeypatch.setattr(meteor, "METEOR_JAR", "no-such-meteor.jar")  # java exits at once

    with pytest.raises(RuntimeError, match="METEOR's Java process failed"):
        score_captions(REFERENCES, RIGHT)


def test_missing_candidates_are_listed():
    candidates = {"1056338697_4f7d7ce270.jpg": "A woman waves ."}

    with pytest.raises(ValueError, match="no candidate.*1012212859_01547e3f17.jpg"):
        score_captions(REFERENCES, candidates)


def test_candidates_without_references_are_rejected():
    candidates = {**RIGHT, "unknown.jpg": "A cat ."}

    with pytest.raises(ValueError, match="no references.*unknown.jpg"):
        score_captions(REFERENCES, candidates)


def test_markdown_table_formats_floats_and_aligns_numbers():
    rows = [
        {"model": "int8 | beam 3", "BLEU-4": 19.537, "seconds": 12},
        {"model": "fp32", "BLEU-4": None},
    ]

    table = markdown_table(rows, ["model", "BLEU-4", "seconds"])

    assert table.splitlines() == [
        "| model | BLEU-4 | seconds |",
        "|---|---:|---:|",
        "| int8 \\| beam 3 | 19.5 | 12 |",
        "| fp32 |  |  |",
    ]
