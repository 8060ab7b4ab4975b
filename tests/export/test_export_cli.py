"""`gamelab-export` options on a tiny run: `--force` redoes the features and train stages,
and `--quiet` reaches the stages that `all` runs. Two photos, one training step per epoch:
seconds per stage, not the minutes of test_pipeline.py."""

import json
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("tensorflow")
skimage_data = pytest.importorskip("skimage.data")

from gamelab_export import cli, pipeline  # noqa: E402
from gamelab_export.config import load_config  # noqa: E402

CAPTIONS = {
    "chelsea.png": ["a cat sits on the floor", "an orange cat looks up"],
    "coffee.png": ["a cup of coffee on a table", "a white cup of coffee"],
}
SETTINGS = [
    "--max_words=3",
    "--embedding_dim=8",
    "--units=8",
    "--attention_dim=8",
    "--batch_size=2",
    "--epochs=1",
    "--max_steps_per_epoch=1",
    "--vocab_min_count=1",
    "--feature_batch_size=2",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, write_coco):
    """A run folder after `train --quiet` (vocabulary, features, one epoch), and the data
    settings that made it."""
    folder = tmp_path_factory.mktemp("cli")
    data = write_coco(folder / "captions.json", CAPTIONS)
    images_dir = os.path.dirname(skimage_data.__file__)
    settings = [f"--data={data}", f"--images_dir={images_dir}", *SETTINGS]
    run_dir = folder / "run"
    assert cli.main(["train", "--quiet", *settings, f"--output={run_dir}"]) == 0
    return run_dir, settings


@pytest.fixture
def run_copy(trained, tmp_path):
    """A copy of the trained run for one test to change, and the arguments that name it."""
    source, settings = trained
    target = tmp_path / "run"
    shutil.copytree(source, target)
    return target, [*settings, f"--output={target}"]


def test_features_force_extracts_again_what_a_rerun_skips(run_copy):
    folder, argv = run_copy
    array_path = folder / "features" / "train.npy"
    extracted = np.load(array_path)
    assert np.abs(extracted).max() > 0
    stale = np.load(array_path, mmap_mode="r+")
    stale[:] = 0
    stale.flush()
    del stale

    assert cli.main(["features", "--quiet", *argv]) == 0
    assert not np.load(array_path).any()  # finished before: skipped
    assert cli.main(["features", "--quiet", "--force", *argv]) == 0
    np.testing.assert_allclose(np.load(array_path), extracted, atol=1e-3)


def test_train_force_trains_again_from_the_first_epoch(run_copy, capsys):
    folder, argv = run_copy
    state_path = folder / "checkpoints" / "state.json"
    state = json.loads(state_path.read_text())
    assert state["epoch"] == 1
    state["history"][0]["seconds"] = -1.0  # no real epoch takes negative time
    state_path.write_text(json.dumps(state))

    assert cli.main(["train", "--quiet", *argv]) == 0
    assert json.loads(state_path.read_text()) == state  # all epochs done: nothing to resume
    capsys.readouterr()
    assert cli.main(["train", "--force", *argv]) == 0
    retrained = json.loads(state_path.read_text())
    assert retrained["epoch"] == len(retrained["history"]) == 1
    assert retrained["history"][0]["seconds"] >= 0
    shown = capsys.readouterr()  # without --quiet: what test_all_quiet_... checks is absent
    assert '"epoch": 1' in shown.out and "epoch 1" in shown.err


def _mark_later_stages_done(folder, argv) -> None:
    """Stand-ins for the outputs of export to evaluate, which then skip themselves."""
    config = load_config(None, argv)
    onnx = folder / "onnx"
    onnx.mkdir()
    for name in pipeline.GRAPH_FILES.values():
        (onnx / name).touch()
        (onnx / name.replace(".onnx", ".int8.onnx")).touch()
    for bundle in pipeline.bundle_dirs(config).values():
        bundle.mkdir(parents=True)
        (bundle / "manifest.json").write_text("{}")
    (folder / "eval").mkdir()
    (folder / "eval" / "tune.json").write_text("{}")
    (folder / "eval" / "metrics.json").write_text("[]")


def test_all_quiet_trains_without_progress_bars_or_epoch_records(run_copy, capsys):
    folder, argv = run_copy
    _mark_later_stages_done(folder, argv)
    capsys.readouterr()

    assert cli.main(["all", "--quiet", *argv, "--epochs=2"]) == 0
    quiet = capsys.readouterr()
    assert json.loads((folder / "checkpoints" / "state.json").read_text())["epoch"] == 2
    assert '"epoch": 2' not in quiet.out and "epoch 2" not in quiet.err
