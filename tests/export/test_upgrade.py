"""Upgrading a quantised bundle: the 4-bit narrow weights read back exactly, and a bundle that
this toolchain wrote (the shipped default) is left as it is."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from gamelab_caption.bundle import DEFAULT_MODEL, load_bundle
from gamelab_export.upgrade import _narrow_nbits_as_float, upgrade_bundle


def _score_graph(weights: np.ndarray) -> onnx.ModelProto:
    """x (R, L, K) @ weights (K, 1): the attention score's shape."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "score",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 7, weights.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 7, 1])],
        [numpy_helper.from_array(weights, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("depth", [512, 200])  # whole blocks of 128, and a part block
def test_narrow_4bit_weights_become_the_floats_they_encode(depth):
    from onnxruntime.quantization import matmul_nbits_quantizer

    rng = np.random.default_rng(0)
    weights = rng.standard_normal((depth, 1)).astype(np.float32)
    quantizer = matmul_nbits_quantizer.MatMulNBitsQuantizer(
        _score_graph(weights), bits=4, block_size=128, is_symmetric=True, accuracy_level=0
    )
    quantizer.process()
    packed = quantizer.model.model
    assert [n.op_type for n in packed.graph.node] == ["MatMulNBits"]
    unpacked = _narrow_nbits_as_float(packed)
    assert [n.op_type for n in unpacked.graph.node] == ["MatMul"]
    assert len(unpacked.graph.initializer) == 1  # the packed weights and scales are gone
    x = rng.standard_normal((3, 7, depth)).astype(np.float32)
    # accuracy level 0 multiplies float activations by the dequantised weights: the same sums
    np.testing.assert_allclose(_run(unpacked, x), _run(packed, x), rtol=1e-5, atol=1e-5)
    # and 4 bits really lost something, so the comparison above can fail
    assert np.abs(_run(unpacked, x) - _run(_score_graph(weights), x)).max() > 1e-3


def test_the_shipped_default_is_already_what_this_toolchain_writes(tmp_path):
    folder = shutil.copytree(load_bundle(DEFAULT_MODEL).path, tmp_path / "bundle")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert upgrade_bundle(folder) == []
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_an_unquantised_bundle_is_refused(tiny_bundle, tmp_path):
    folder = shutil.copytree(tiny_bundle, tmp_path / "tiny")
    with pytest.raises(ValueError, match="not a quantised bundle"):
        upgrade_bundle(folder)
