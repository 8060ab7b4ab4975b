"""The ImageNet head appended to an encoder graph: the other outputs untouched, the classes
those of EfficientNet-Lite0's own head."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from gamelab_caption.bundle import load_bundle
from gamelab_caption.preprocessing import preprocess
from gamelab_export.class_head import add_class_head, has_class_head, imagenet_head

EXAMPLES = Path(__file__).parents[2] / "examples" / "images"
# ImageNet-1k indices: what EfficientNet-Lite0 calls these photos
EXPECTED = {"cat.jpg": range(281, 286), "coffee.jpg": [967], "camera.jpg": [872]}


@pytest.fixture(scope="module")
def headless_encoder(tmp_path_factory) -> tuple[Path, object]:
    """The inception-v3 bundle's encoder has no ImageNet head; lite0's: a copy without one."""
    bundle = load_bundle("efficientnet-lite0")
    path = tmp_path_factory.mktemp("encoder") / "encoder.onnx"
    import onnx

    model = onnx.load(str(bundle.graph_path("encoder")))
    if has_class_head(bundle.graph_path("encoder")):  # the shipped one has it: take it off
        del model.graph.output[2:]
        model = onnx.utils.Extractor(model).extract_model(["image"], ["features", "embedding"])
    onnx.save(model, str(path))
    return path, bundle.image_spec


def _pixels(spec) -> np.ndarray:
    return np.stack([preprocess(EXAMPLES / name, spec) for name in EXPECTED])


@pytest.mark.parametrize("bits", [None, 4])
def test_the_head_adds_classes_and_changes_nothing_else(headless_encoder, tmp_path, bits):
    source, spec = headless_encoder
    target = shutil.copy(source, tmp_path / "encoder.onnx")
    weight, bias = imagenet_head("efficientnet_lite0")
    add_class_head(target, weight, bias, bits)
    assert has_class_head(target) and not has_class_head(source)
    pixels = _pixels(spec)
    before = ort.InferenceSession(str(source)).run(["features", "embedding"], {"image": pixels})
    after = ort.InferenceSession(str(target)).run(
        ["features", "embedding", "classes"], {"image": pixels}
    )
    for old, new in zip(before, after[:2], strict=True):
        assert np.array_equal(old, new)
    logits = before[1] @ weight + bias
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    # float: the same numbers; 4-bit weights move a probability by 0.04 at most on these
    np.testing.assert_allclose(after[2], expected, atol=1e-5 if bits is None else 0.05)
    for classes, wanted in zip(after[2], EXPECTED.values(), strict=True):
        assert int(classes.argmax()) in wanted


def test_a_second_head_is_refused(headless_encoder, tmp_path):
    source, _ = headless_encoder
    target = shutil.copy(source, tmp_path / "encoder.onnx")
    head = imagenet_head("efficientnet_lite0")
    add_class_head(target, *head, bits=4)
    with pytest.raises(ValueError, match="no 'classes'"):
        add_class_head(target, *head, bits=4)


def test_inception_v3_has_no_imagenet_head():
    # nsfwjs retrained its top for five content classes: nothing to name animals with
    assert imagenet_head("inception_v3") is None
