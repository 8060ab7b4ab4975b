"""Sequence-level distillation on a toy set: the shipped default bundle (the real teacher)
captions eight real photos (scikit-image's CC0/public domain test images), the vocabulary is
built from its captions, and a small student decoder trained on them says them back."""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
skimage_data = pytest.importorskip("skimage.data")

from gamelab_caption import Captioner  # noqa: E402
from gamelab_caption.vocabulary import SPECIAL_TOKENS, Vocabulary, tokenize  # noqa: E402
from gamelab_export import pipeline  # noqa: E402
from gamelab_export.config import load_config  # noqa: E402
from gamelab_export.distill import teacher_file  # noqa: E402
from gamelab_export.encoders import encoder_spec  # noqa: E402
from gamelab_export.train import greedy_decoder, load_trained_decoder  # noqa: E402

PHOTOS = {  # human captions: a vocabulary apart from the teacher's (bricks, coins, moon ...)
    "brick.png": ["a red brick wall"],
    "coins.png": ["old coins on a table"],
    "moon.png": ["craters on the moon"],
    "grass.png": ["green grass in a field"],
    "clock_motion.png": ["a clock on a wall"],
    "horse.png": ["a black horse runs"],
    "page.png": ["a page of printed text"],
    "camera.png": ["a man films with a camera on a tripod"],
}
TEACHER = "efficientnet-lite0"
TOY_SETTINGS = [
    f"--distill_from={TEACHER}",
    "--distill_captions=1",
    "--max_words=8",
    "--embedding_dim=32",
    "--units=64",
    "--attention_dim=32",
    "--dropout=0.0",
    "--batch_size=2",  # four steps an epoch
    "--epochs=30",
    "--patience=100",
    "--learning_rate=0.005",
    "--lr_decay=1.0",
    "--vocab_min_count=1",
]


@pytest.fixture(scope="module")
def teacher_beams():
    """The teacher's (up to) three best captions of each photo by file name, from the SDK."""
    folder = os.path.dirname(skimage_data.__file__)
    paths = [os.path.join(folder, name) for name in sorted(PHOTOS)]
    results = Captioner(TEACHER).caption_batch(paths, beam_size=3, max_length=8)
    return {
        name: [r.text, *(text for text, _ in r.alternatives)]
        for name, r in zip(sorted(PHOTOS), results, strict=True)
    }


@pytest.fixture(scope="module")
def toy_config(tmp_path_factory, write_coco, teacher_beams):
    """Trains on PHOTOS; dev references are the teacher's best captions, so that the epoch
    kept is the one that says them best (the human ones are a vocabulary apart)."""
    folder = tmp_path_factory.mktemp("distill")
    data = write_coco(folder / "captions_toy.json", PHOTOS)
    dev = {name: beams[:1] for name, beams in teacher_beams.items()}
    dev_data = write_coco(folder / "captions_dev.json", dev)
    images_dir = os.path.dirname(skimage_data.__file__)
    argv = [
        f"--data={data}",
        f"--dev_data={dev_data}",
        f"--images_dir={images_dir}",
        f"--output={folder / 'run'}",
    ]
    return load_config(None, [*argv, *TOY_SETTINGS])


def _by_id(config, by_name: dict) -> dict:
    return {e.image_id: by_name[e.path.name] for e in pipeline.load_split(config, "train")[0]}


@pytest.fixture(scope="module")
def toy_student(toy_config):
    state = pipeline.run_stage("train", toy_config, progress=False)
    return toy_config, state


def _cached(config) -> dict[str, list[str]]:
    rows = [json.loads(line) for line in teacher_file(config).read_text().splitlines()]
    return {row["image_id"]: row["captions"] for row in rows}


def test_the_teacher_captions_every_training_photo_with_its_best_beams(
    tmp_path, toy_config, teacher_beams
):
    three = dataclasses.replace(toy_config, output=str(tmp_path / "run"), distill_captions=3)
    taught = pipeline.run_stage("teach", three, progress=False)
    assert taught == {i: tuple(beams) for i, beams in _by_id(three, teacher_beams).items()}
    assert _cached(three) == _by_id(three, teacher_beams)
    described = json.loads((teacher_file(three).parent / "teacher.json").read_text())
    assert described["teacher"] == TEACHER
    assert described["files"] == Captioner(TEACHER).bundle.manifest["files"]


def test_a_stopped_teacher_resumes_without_captioning_a_photo_twice(tmp_path, toy_config):
    config = dataclasses.replace(toy_config, output=str(tmp_path / "run"))
    first = pipeline.run_stage("teach", config, progress=False)
    path = teacher_file(config)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:5]) + lines[5][:20])  # stopped while writing the sixth
    again = pipeline.run_stage("teach", config, progress=False)
    assert again == first
    assert len(path.read_text().splitlines()) == len(PHOTOS), "each photo once"


def test_the_vocabulary_is_the_teachers_words(toy_student, teacher_beams):
    config, _ = toy_student
    vocabulary = Vocabulary.load(config.run_dir / "vocab.json")
    taught = {word for beams in teacher_beams.values() for word in tokenize(beams[0])}
    assert set(vocabulary.words) - set(SPECIAL_TOKENS) == taught
    assert "brick" not in vocabulary.words or "brick" in taught  # human-only words are out
    with_human = dataclasses.replace(config, distill_human=True)
    examples = pipeline._taught(with_human, pipeline.load_split(with_human, "train")[0])
    first = examples[0]
    assert first.captions == (teacher_beams[first.path.name][0], *PHOTOS[first.path.name])


def test_the_student_says_the_teachers_captions(toy_student, teacher_beams):
    config, state = toy_student
    spec = encoder_spec(config.encoder)
    vocabulary = Vocabulary.load(config.run_dir / "vocab.json")
    student = load_trained_decoder(
        config, vocabulary, spec.feature_dim, spec.grid[0] * spec.grid[1]
    )
    examples, extracted = pipeline.features(config, progress=False)["train"]
    said = greedy_decoder(student, vocabulary, config.max_words)(
        np.asarray(extracted.features, np.float32)
    )
    expected = [" ".join(tokenize(teacher_beams[e.path.name][0])) for e in examples]
    same = sum(s == t for s, t in zip(said, expected, strict=True))
    assert same >= 6, list(zip(said, expected, strict=True))  # measured here: 8 and 7 of 8


def test_distill_captions_must_be_positive():
    with pytest.raises(ValueError, match="distill_captions"):
        load_config(None, ["--distill_captions=0"])


def test_scst_of_a_student_is_rewarded_against_the_human_captions(toy_student, tmp_path):
    config, _ = toy_student
    run = dataclasses.replace(
        config, output=str(tmp_path / "run"), scst_epochs=1, scst_batch_size=4, scst_samples=4
    )
    shutil.copytree(config.run_dir, run.run_dir)
    state = pipeline.run_stage("scst", run, progress=False)
    # The student says the teacher's captions (a vocabulary apart from the human ones): rewarded
    # against the teacher's, its samples earned a CIDEr-D of 4.5 here; against the human
    # ones, 0.17.
    assert state["history"][-1]["sample_reward"] < 0.5, state["history"]


def test_the_students_manifest_names_its_teacher(toy_student):
    config, _ = toy_student
    manifest = pipeline._manifest(config, "int8", None)
    teacher = Captioner(TEACHER).bundle.manifest
    assert manifest["provenance"]["teacher"]["files"] == teacher["files"]
    created = teacher["provenance"]["created"]
    assert f"distilled from bundle {TEACHER} ({created})" in manifest["description"]
