"""The nsfwjs InceptionV3 import: decoding, assignment, expected input range, behaviour.

Needs npm and the npm registry once (``npm pack nsfwjs@4.4.0``, 25 MB), then the default
cache (``$GAMELAB_CACHE`` or ~/.cache/gamelab-caption); skipped where neither is there.
"""

from pathlib import Path

import numpy as np
import pytest

from gamelab_export import inception_import
from gamelab_export.inception_import import (
    NSFWJS_MEAN,
    NSFWJS_STD,
    build_inception_v3,
    fetch_nsfwjs,
    load_nsfwjs_weights,
)

pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

NSFW_CLASSES = ("Drawing", "Hentai", "Neutral", "Porn", "Sexy")  # dist/esm/nsfw_classes.js
# Keras InceptionV3(include_top=False): 21,802,784 parameters in 94 conv kernels and
# 94 BatchNormalization layers (scale=False: beta, moving mean, moving variance).
KERAS_NOTOP_PARAMS = 21_802_784
KERAS_NOTOP_TENSORS = 94 + 94 * 3
NSFWJS_HEAD_PARAMS = 2048 * 256 + 256 + 256 * 128 + 128 + 128 * 5 + 5


@pytest.fixture(scope="module")
def nsfwjs_dir():
    try:
        return fetch_nsfwjs()
    except RuntimeError as e:
        pytest.skip(f"nsfwjs weights not cached and not fetchable with npm: {e}")


@pytest.fixture(scope="module")
def nsfwjs_weights(nsfwjs_dir):
    return load_nsfwjs_weights(nsfwjs_dir)


@pytest.fixture(scope="module")
def model(nsfwjs_dir):
    return build_inception_v3()


def _sample_image(name: str) -> np.ndarray:
    """A picture matplotlib ships, as (1, 299, 299, 3) float32 RGB pixels in 0..255."""
    matplotlib = pytest.importorskip("matplotlib")
    from PIL import Image

    path = Path(matplotlib.get_data_path()) / "sample_data" / name
    image = Image.open(path).convert("RGB").resize((299, 299), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)[None]  # (1, 299, 299, 3)


def _sorted_layers(model, kind: str) -> list:
    layers = [layer for layer in model.layers if type(layer).__name__ == kind]
    return sorted(layers, key=lambda layer: inception_import._creation_index(layer.name))


def test_load_nsfwjs_weights_decodes_backbone_and_head(nsfwjs_weights):
    assert len(nsfwjs_weights) == KERAS_NOTOP_TENSORS + 6  # + 3 Dense kernels and biases
    assert sum(w.size for w in nsfwjs_weights.values()) == KERAS_NOTOP_PARAMS + NSFWJS_HEAD_PARAMS
    assert nsfwjs_weights["conv2d_1/kernel"].shape == (3, 3, 3, 32)
    assert nsfwjs_weights["dense_3/kernel"].shape == (128, 5)
    assert all(w.dtype == np.float32 and np.isfinite(w).all() for w in nsfwjs_weights.values())
    assert min(w.min() for k, w in nsfwjs_weights.items() if "moving_variance" in k) > 0


def test_build_assigns_every_backbone_weight(model, nsfwjs_weights):
    assert model.count_params() == KERAS_NOTOP_PARAMS
    assert model.output_shape == (None, 8, 8, 2048)
    convs = _sorted_layers(model, "Conv2D")
    assert len(convs) == 94
    for index in (0, 49, 93):  # first conv, last of mixed5, last of mixed10
        expected = nsfwjs_weights[f"conv2d_{index + 1}/kernel"]
        np.testing.assert_array_equal(convs[index].get_weights()[0], expected)
    bns = _sorted_layers(model, "BatchNormalization")
    np.testing.assert_array_equal(
        bns[-1].get_weights()[2], nsfwjs_weights["batch_normalization_94/moving_variance"]
    )
    assert not [layer for layer in model.layers if "Rescaling" in type(layer).__name__]


def test_batchnorm_statistics_expect_unit_range_pixels(model):
    # The first BN's moving stats describe the first conv's output on the training inputs:
    # on a natural photo, E[(a - mean)^2 / var] is about 1 for the right input range.
    first_conv = _sorted_layers(model, "Conv2D")[0]
    first_bn = _sorted_layers(model, "BatchNormalization")[0]
    _, moving_mean, moving_var = first_bn.get_weights()
    probe = keras.Model(model.inputs, first_conv.output)
    pixels = _sample_image("grace_hopper.jpg")
    mean, std = np.array(NSFWJS_MEAN), np.array(NSFWJS_STD)
    moments = {}
    for label, x in (("[0, 1]", (pixels - mean) / std), ("[-1, 1]", pixels / 127.5 - 1)):
        activations = probe.predict(x, verbose=0)  # (1, 149, 149, 32)
        moments[label] = np.median(((activations - moving_mean) ** 2 / moving_var).mean((0, 1, 2)))
    assert 0.5 < moments["[0, 1]"] < 2.5, moments
    assert moments["[-1, 1]"] > 3 * moments["[0, 1]"], moments


def test_nsfwjs_head_tells_a_photo_from_a_drawing(model, nsfwjs_weights):
    # nsfwjs's own head on our features, fed as nsfwjs feeds it (pixels / 255).
    pixels = np.concatenate([_sample_image("grace_hopper.jpg"), _sample_image("logo2.png")])
    features = model.predict((pixels - np.array(NSFWJS_MEAN)) / np.array(NSFWJS_STD), verbose=0)
    hidden = features.mean(axis=(1, 2))  # (2, 2048): the 8x8 average pool
    for layer in ("dense_1", "dense_2"):
        kernel, bias = nsfwjs_weights[f"{layer}/kernel"], nsfwjs_weights[f"{layer}/bias"]
        hidden = np.maximum(hidden @ kernel + bias, 0)  # (2, 256) then (2, 128)
    logits = hidden @ nsfwjs_weights["dense_3/kernel"] + nsfwjs_weights["dense_3/bias"]  # (2, 5)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    assert [NSFW_CLASSES[i] for i in probs.argmax(1)] == ["Neutral", "Drawing"], probs.round(3)
    assert probs[0, 2] > 0.9 and probs[1, 0] > 0.9, probs.round(3)


def test_output_layer_cuts_the_graph(nsfwjs_dir):
    model = build_inception_v3(output_layer="mixed7")
    assert model.output_shape == (None, 17, 17, 768)


def test_fetch_reuses_the_cache_without_npm(nsfwjs_dir, monkeypatch):
    monkeypatch.setattr(inception_import.shutil, "which", lambda name: None)
    assert fetch_nsfwjs(nsfwjs_dir.parent) == nsfwjs_dir


def test_fetch_without_npm_raises_runtime_error(tmp_path, monkeypatch):
    monkeypatch.setattr(inception_import.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="npm not found"):
        fetch_nsfwjs(tmp_path)


def test_invalid_arguments_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="expected one of: mixed0"):
        build_inception_v3(output_layer="avg_pool")
    with pytest.raises(ValueError, match="'imagenet'"):
        build_inception_v3(weights=str(tmp_path / "missing.weights.h5"))


# Keras' h5 writer calls __array__(copy=False) on each variable; numpy 2 warns 376 times.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_local_weights_file_round_trips(model, tmp_path):
    path = tmp_path / "inception_v3_notop.weights.h5"
    model.save_weights(path)
    reloaded = build_inception_v3(weights=str(path), output_layer="mixed5")
    first = _sorted_layers(model, "Conv2D")[0].get_weights()[0]
    np.testing.assert_array_equal(_sorted_layers(reloaded, "Conv2D")[0].get_weights()[0], first)


def test_mismatched_weights_are_named(nsfwjs_weights):
    model = keras.applications.InceptionV3(include_top=False, weights=None)
    weights = dict(nsfwjs_weights, **{"conv2d_9/kernel": np.zeros((1, 1, 192, 3), np.float32)})
    del weights["conv2d_7/kernel"]
    weights["conv2d_95/kernel"] = weights["conv2d_1/kernel"]
    with pytest.raises(ValueError, match="missing conv2d_7/kernel") as error:
        inception_import._assign_nsfwjs_weights(model, weights)
    assert "conv2d_9/kernel (1, 1, 192, 3)" in str(error.value)
    assert "unused tfjs weights: conv2d_9/kernel, conv2d_95/kernel" in str(error.value)
