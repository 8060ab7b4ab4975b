"""The converted graphs lose tf2onnx's bookkeeping nodes, and nothing they compute."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from gamelab_caption.bundle import load_bundle
from gamelab_export.graph_cleanup import _random_feeds, simplify


def _session(model) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _op_types(model) -> list[str]:
    return [node.op_type for node in model.graph.node]


@pytest.fixture(scope="module")
def shipped_step():
    # a real tf2onnx decoder step (the shipped default's, quantised after conversion)
    return onnx.load(str(load_bundle("efficientnet-lite0").graph_path("decoder_step")))


def test_the_shipped_decoder_step_loses_its_bookkeeping_nodes(shipped_step):
    simplified = simplify(shipped_step)
    assert len(simplified.graph.node) <= len(shipped_step.graph.node) - 16  # 60 -> 44
    for op in ("Less", "Not", "Shape"):  # the id wrapping and the tensordot's shape chain
        assert op in _op_types(shipped_step) and op not in _op_types(simplified)
    gather = next(n for n in simplified.graph.node if n.op_type == "Gather")
    assert gather.input[1] == "token"


def test_the_simplified_step_computes_what_the_converted_one_does(shipped_step):
    simplified = simplify(shipped_step)
    rng = np.random.default_rng(1)
    for batch in (1, 6):
        feeds = _random_feeds(shipped_step, batch, rng)
        feeds["token"] = rng.integers(0, 457, batch)  # the whole vocabulary
        for a, b in zip(
            _session(shipped_step).run(None, feeds),
            _session(simplified).run(None, feeds),
            strict=True,
        ):
            np.testing.assert_allclose(a, b, atol=1e-5)


def _lookup_graph(offset: int) -> onnx.ModelProto:
    """table[token + offset] with table rows 0..9, written as Cast/Add arithmetic on ids."""
    table = numpy_helper.from_array(np.arange(40, dtype=np.float32).reshape(10, 4), "table")
    shift = numpy_helper.from_array(np.array(offset, np.int64), "shift")
    nodes = [
        helper.make_node("Add", ["token", "shift"], ["shifted"]),
        helper.make_node("Cast", ["shifted"], ["ids"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "ids"], ["rows"]),
    ]
    graph = helper.make_graph(
        nodes,
        "lookup",
        [helper.make_tensor_value_info("token", TensorProto.INT64, [None])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, [None, 4])],
        [table, shift],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_ids_that_arithmetic_leaves_unchanged_are_given_to_the_gather_directly():
    simplified = simplify(_lookup_graph(0))
    assert _op_types(simplified) == ["Gather"]


def test_a_rewrite_that_changes_the_outputs_is_refused():
    # ids shifted by one really change which rows are read (-1 is the last): kept as it is
    shifted = _lookup_graph(-1)
    assert simplify(shifted) is shifted
