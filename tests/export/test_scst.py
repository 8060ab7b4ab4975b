"""Self-critical sequence training on a toy set: eight real photos (scikit-image's CC0/public
domain test images) with three hand-written captions each, a small decoder trained by
cross-entropy, then fine-tuned on its own captions (80 steps). They must earn more CIDEr-D."""

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
skimage_data = pytest.importorskip("skimage.data")

from gamelab_caption.vocabulary import Vocabulary  # noqa: E402
from gamelab_export import pipeline  # noqa: E402
from gamelab_export.config import load_config  # noqa: E402
from gamelab_export.data import Example  # noqa: E402
from gamelab_export.encoders import encoder_spec  # noqa: E402
from gamelab_export.scst import _until_end, readable_rows  # noqa: E402
from gamelab_export.train import load_trained_decoder, scst_weights  # noqa: E402

TOY_CAPTIONS = {
    "brick.png": ["a red brick wall", "a wall of red bricks", "red bricks in a wall"],
    "coins.png": ["old coins on a table", "many coins on a dark table", "coins lie on a table"],
    "moon.png": ["the moon in the night sky", "a grey moon with craters", "craters on the moon"],
    "grass.png": ["green grass in a field", "a field of grass", "grass grows in a field"],
    "clock_motion.png": ["a clock on a wall", "a round clock on the wall", "a clock on the wall"],
    "horse.png": ["a black horse runs", "a horse running", "the shape of a running horse"],
    "page.png": ["a page of printed text", "text printed on a page", "an old page of text"],
    "hubble_deep_field.jpg": ["galaxies in deep space", "many galaxies in space", "stars in space"],
}
TOY_SETTINGS = [
    "--max_words=8",
    "--embedding_dim=32",
    "--units=64",
    "--attention_dim=32",
    "--dropout=0.0",
    "--batch_size=8",
    "--epochs=15",
    "--patience=100",
    "--learning_rate=0.005",
    "--lr_decay=1.0",
    "--vocab_min_count=1",
    "--scst_epochs=40",
    "--scst_learning_rate=0.0005",
    "--scst_batch_size=4",  # two steps an epoch
    "--scst_samples=16",
]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory, write_coco):
    folder = tmp_path_factory.mktemp("toy")
    data = write_coco(folder / "captions_toy.json", TOY_CAPTIONS)
    images_dir = os.path.dirname(skimage_data.__file__)
    argv = [f"--data={data}", f"--images_dir={images_dir}", f"--output={folder / 'run'}"]
    config = load_config(None, [*argv, *TOY_SETTINGS])
    state = pipeline.run_stage("scst", config, progress=False)
    return config, state


def test_the_reward_rises(toy_run):
    _, state = toy_run
    history = state["history"]
    assert [h["epoch"] for h in history] == list(range(41))
    # The reward of sampled captions is what SCST ascends (CIDEr-D x1; a good caption scores
    # 1-3). Five fresh runs here: 1.15 -> 1.40, 1.23 -> 1.56, 1.33 -> 1.70, 1.41 -> 1.92,
    # 1.37 -> 1.71 (first five epochs -> last five). The greedy captions' reward and dev CIDEr
    # rose in three of them: too few steps for a toy to show it every time.
    before, after = (
        np.mean([h["sample_reward"] for h in part]) for part in (history[1:6], history[-5:])
    )
    assert after > before + 0.1, (before, after)


def test_the_run_then_uses_the_fine_tuned_weights(toy_run, tmp_path):
    config, _ = toy_run
    spec = encoder_spec(config.encoder)
    vocabulary = Vocabulary.load(config.run_dir / "vocab.json")
    run = dataclasses.replace(config, output=str(tmp_path / "run"))
    shutil.copytree(config.run_dir, run.run_dir)
    args = (run, vocabulary, spec.feature_dim, spec.grid[0] * spec.grid[1])
    cross_entropy = load_trained_decoder(*args, cross_entropy_only=True)
    for variable in cross_entropy.weights:  # stands for fine-tuned weights: all moved
        variable.assign(variable + 0.5)
    cross_entropy.save_weights(str(scst_weights(run, 0)))
    fine_tuned = load_trained_decoder(*args)
    for moved, loaded in zip(cross_entropy.weights, fine_tuned.weights, strict=True):
        np.testing.assert_array_equal(moved.numpy(), loaded.numpy())
    without = dataclasses.replace(run, scst_epochs=0)
    assert pipeline.run_stage("scst", without, progress=False) is None
    plain = load_trained_decoder(without, *args[1:])  # a run without scst: train's weights
    assert not np.allclose(plain.weights[0].numpy(), fine_tuned.weights[0].numpy())


def test_scst_resumes_after_the_last_finished_epoch(toy_run):
    config, before = toy_run
    longer = dataclasses.replace(config, scst_epochs=before["epoch"] + 1)
    after = pipeline.run_stage("scst", longer, progress=False)
    assert after["epoch"] == before["epoch"] + 1
    assert after["history"][: len(before["history"])] == before["history"]


def test_only_the_words_up_to_the_first_end_are_rewarded():
    end = 2
    ids = np.array([[5, 6, end, 7, end], [5, 5, 5, 5, 5], [end, 4, 4, 4, 4]])
    expected = [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    np.testing.assert_array_equal(_until_end(ids, end), expected)


def test_an_unreadable_training_image_is_never_sampled():
    # its features are zeros: a caption rewarded for zeros teaches nothing true
    examples = [Example(name, Path(name), ("a dog",)) for name in ("a.jpg", "b.jpg", "c.jpg")]
    rows = readable_rows(examples, {"b.jpg": "cannot identify image file"})
    np.testing.assert_array_equal(rows, [0, 2])
