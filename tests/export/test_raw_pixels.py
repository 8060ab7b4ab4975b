"""raw_pixels: a quantised encoder takes the image's bytes only where that computes exactly what
the normalised floats did; any other graph is left as it was."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from gamelab_caption.preprocessing import ImageSpec
from gamelab_export.raw_pixels import input_dtype, take_raw_pixels

LITE = ImageSpec(size=(4, 4), mean=(127.0,) * 3, std=(128.0,) * 3)  # EfficientNet-Lite's


def _encoder(path, scale: float, zero_point: int, second_reader: bool = False):
    """image (N, 4, 4, 3) -> Transpose -> QuantizeLinear -> DequantizeLinear -> pixels, as a
    statically quantised encoder starts; ``second_reader``: the transposed floats feed a
    ReduceMean too."""
    nodes = [
        helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("QuantizeLinear", ["nchw", "scale", "zero"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["pixels"]),
    ]
    outputs = [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [None, 3, 4, 4])]
    if second_reader:
        nodes.append(helper.make_node("ReduceMean", ["nchw"], ["mean"], keepdims=0))
        outputs.append(helper.make_tensor_value_info("mean", TensorProto.FLOAT, []))
    graph = helper.make_graph(
        nodes,
        "encoder",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 4, 4, 3])],
        outputs,
        [
            numpy_helper.from_array(np.array(scale, np.float32), "scale"),
            numpy_helper.from_array(np.array(zero_point, np.uint8), "zero"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def test_an_encoder_whose_quantisation_undoes_the_normalisation_takes_bytes(tmp_path):
    path = _encoder(tmp_path / "encoder.onnx", 1 / 128, 127)
    assert take_raw_pixels(path, LITE)  # it checked the outputs on every byte value itself
    assert input_dtype(path) == "uint8"
    assert [node.op_type for node in onnx.load(str(path)).graph.node] == [
        "Transpose",
        "DequantizeLinear",
    ]


@pytest.mark.parametrize(
    "scale, zero_point, spec, second_reader",
    [
        (1 / 127.5, 128, ImageSpec(size=(4, 4)), False),  # (v - 127.5) / 127.5: halves
        (1 / 128, 127, ImageSpec(size=(4, 4)), False),  # the right scale, another normalisation
        (1 / 128, 127, LITE, True),  # exact, but the floats are read elsewhere too
    ],
    ids=["other-scale", "other-normalisation", "floats-read-twice"],
)
def test_any_other_encoder_is_left_as_it_was(tmp_path, scale, zero_point, spec, second_reader):
    path = _encoder(tmp_path / "encoder.onnx", scale, zero_point, second_reader)
    before = path.read_bytes()
    assert not take_raw_pixels(path, spec)
    assert path.read_bytes() == before and input_dtype(path) == "float32"
