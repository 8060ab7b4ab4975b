"""Naming the animal the encoder's ImageNet head sees: the rule, and the shipped default on
real photos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from gamelab_caption import BundleError, Captioner
from gamelab_caption.animals import KINDS, kind_probabilities, name_animal
from gamelab_caption.bundle import DEFAULT_MODEL, load_bundle, write_manifest

EXAMPLES = Path(__file__).parents[2] / "examples" / "images"
KIND = {kind.singular: number for number, kind in enumerate(KINDS)}


def _seen(kind: str, probability: float) -> np.ndarray:
    kinds = np.zeros(len(KINDS), np.float32)
    kinds[KIND[kind]] = probability
    return kinds


@pytest.mark.parametrize(
    "caption, seen, expected",
    [
        ("a brown dog is playing with a ball", "cat", "a brown cat is playing with a ball"),
        ("two dogs are running in the grass", "sheep", "two sheep are running in the grass"),
        ("two puppies are playing", "cat", "two cats are playing"),
        ("a man is riding a horse", "elephant", "a man is riding an elephant"),
        ("an animal is near a dog", "bird", "an animal is near a bird"),  # "animal" is right
    ],
)
def test_the_captions_animal_becomes_the_kind_seen(caption, seen, expected):
    assert " ".join(name_animal(caption.split(), _seen(seen, 0.9), 0.8)) == expected


@pytest.mark.parametrize(
    "caption, seen, probability",
    [
        ("a brown dog is playing with a ball", "cat", 0.7),  # below the threshold
        ("a man is riding a horse next to a dog", "horse", 0.9),  # the kind seen is named
        ("a man is standing in front of a crowd", "cat", 0.99),  # no animal to rename
    ],
)
def test_captions_are_kept_otherwise(caption, seen, probability):
    assert name_animal(caption.split(), _seen(seen, probability), 0.8) == tuple(caption.split())


def test_each_imagenet_class_belongs_to_one_kind_at_most():
    members = [index for kind in KINDS for index in kind.classes]
    assert len(members) == len(set(members))
    assert all(0 <= index < 1000 for index in members)
    probabilities = np.full((2, 1000), 1 / 1000, np.float32)
    kinds = kind_probabilities(probabilities)
    assert kinds.shape == (2, len(KINDS))
    np.testing.assert_allclose(kinds.sum(axis=1), len(members) / 1000, rtol=1e-5)


@pytest.fixture(scope="module")
def captioner():
    return Captioner()


def test_the_default_names_the_cat_its_decoder_calls_a_dog(captioner):
    # The decoder's vocabulary has no "cat" (Flickr8k's captions of the teacher never said it)
    assert "cat" not in captioner.bundle.vocabulary.words
    decoded = captioner.caption(EXAMPLES / "cat.jpg", name_animals=False)
    named = captioner.caption(EXAMPLES / "cat.jpg")
    assert "dog" in decoded.tokens and "cat" not in decoded.tokens
    assert "cat" in named.tokens and "dog" not in named.tokens
    assert named.text == " ".join(named.tokens)
    assert named.score == decoded.score  # the words change, not the search
    assert [text.replace("dog", "cat") for text, _ in decoded.alternatives] == [
        text for text, _ in named.alternatives
    ]


def test_photos_without_an_animal_seen_keep_their_words(captioner):
    paths = [EXAMPLES / name for name in ("swimming.jpg", "camera.jpg", "coffee.jpg")]
    named = captioner.caption_batch(paths)
    decoded = captioner.caption_batch(paths, name_animals=False)
    assert [r.text for r in named] == [r.text for r in decoded]
    # coffee.jpg is "a black dog is standing in the water": the head sees an espresso, not an
    # animal, so it has no kind to give (known limit, in the model card)
    assert "dog" in named[2].tokens


def test_a_batch_over_one_encoder_call_names_each_image_by_its_own_classes(captioner):
    from gamelab_caption.captioner import ENCODER_BATCH

    swimming, cat = EXAMPLES / "swimming.jpg", EXAMPLES / "cat.jpg"
    paths = [swimming] * ENCODER_BATCH + [cat]  # the cat in the encoder's second call
    results = captioner.caption_batch(paths)
    assert "cat" in results[-1].tokens
    assert all("cat" not in result.tokens for result in results[:-1])


def test_the_option_must_be_a_bool(captioner):
    with pytest.raises(TypeError, match="name_animals must be a bool"):
        captioner.caption(EXAMPLES / "cat.jpg", name_animals="no")


def test_the_encoder_gives_imagenet_probabilities_beside_unchanged_embeddings(captioner):
    from gamelab_caption.preprocessing import preprocess

    pixels = preprocess(EXAMPLES / "cat.jpg", captioner.bundle.image_spec)[None]
    features, embedding, classes = captioner._encode(pixels, classes=True)
    plain_features, plain_embedding = captioner.encode(pixels)  # what game search reads
    assert np.array_equal(features, plain_features)
    assert np.array_equal(embedding, plain_embedding)
    assert classes.shape == (1, 1000)
    np.testing.assert_allclose(classes.sum(), 1.0, rtol=1e-4)
    assert kind_probabilities(classes)[0, KIND["cat"]] > 0.9


def _with_manifest(tmp_path: Path, edit) -> Path:
    """A copy of the default bundle, its manifest edited and its checksums rewritten."""
    folder = shutil.copytree(load_bundle(DEFAULT_MODEL).path, tmp_path / "bundle")
    _rewrite_manifest(folder, edit)
    return folder


def _rewrite_manifest(folder: Path, edit) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    manifest.pop("files")
    manifest.pop("format_version")
    write_manifest(folder, manifest)


@pytest.mark.parametrize("threshold", [0, 1.5, "0.8", True])
def test_a_bad_threshold_in_the_manifest_is_a_bundle_error(tmp_path, threshold):
    folder = _with_manifest(tmp_path, lambda m: m["decoding"].update(animal_threshold=threshold))
    with pytest.raises(BundleError, match="animal_threshold"):
        load_bundle(folder)


def test_unknown_class_labels_are_a_bundle_error(tmp_path):
    folder = _with_manifest(
        tmp_path, lambda m: m["encoder"].update(classes={"labels": "places365", "output": "x"})
    )
    with pytest.raises(BundleError, match="encoder.classes"):
        load_bundle(folder)


def test_a_bundle_without_a_head_keeps_the_decoders_words(tmp_path):
    folder = _with_manifest(tmp_path, lambda m: m["encoder"].pop("classes"))
    assert load_bundle(folder).animal_threshold is None
    assert "dog" in Captioner(folder).caption(EXAMPLES / "cat.jpg").tokens


def test_a_manifest_promising_classes_the_encoder_lacks_is_a_bundle_error(tmp_path):
    import onnx

    folder = shutil.copytree(load_bundle(DEFAULT_MODEL).path, tmp_path / "bundle")
    model = onnx.load(str(folder / "encoder.onnx"))
    model = onnx.utils.Extractor(model).extract_model(["image"], ["features", "embedding"])
    onnx.save(model, str(folder / "encoder.onnx"))
    _rewrite_manifest(folder, lambda m: None)  # the new graph's sha256
    with pytest.raises(BundleError, match="no 'classes' output"):
        Captioner(folder)
