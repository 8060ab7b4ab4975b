"""Take out of a converted graph the nodes that tf2onnx adds and that compute nothing here,
then fuse what ``graph_fusion`` can.

The decoder step runs ~12 times a caption, and at its size ONNX Runtime's cost per node
(a few microseconds) is a fair share of the step: of the 60 nodes tf2onnx writes for it, 18
are bookkeeping. Three rewrites, each checked with the fusions by running the graph before
and after:

- full-range ``Slice`` (``x[:, None, :]`` becomes Unsqueeze + a Slice of everything; also a
  Slice whose end covers an axis of known length);
- Keras' Dense on a 3-D input (``tensordot``): Reshape to 2-D, MatMul, Reshape back through
  a Shape/Gather/Concat chain; ONNX's MatMul takes the 3-D input as it is;
- Keras 3's embedding lookup wraps negative ids (``where(id < 0, id + V, id)``, 8 nodes);
  the ids here are vocabulary rows, never negative, so the Gather takes them directly.

``simplify`` keeps the rewritten graph only if it gives the original's outputs on random
inputs at two batch sizes (ids drawn from the real vocabulary); otherwise the original.
"""

from __future__ import annotations

import logging

import numpy as np

from .graph_fusion import merge_matmuls_of_one_input, slices_into_split, weighted_sums_as_matmuls
from .onnx_graph import (
    drop_unused,
    graph_constants,
    graph_consumers,
    graph_producers,
    model_shapes,
    replace_uses,
    slice_ranges,
)

logger = logging.getLogger(__name__)

_MATMULS = ("MatMul", "MatMulNBits")
_INT64_MAX = np.iinfo(np.int64).max
_BATCH_SIZES = (1, 3)
ATOL = 1e-5


def simplify(model):
    """A copy of ``model`` without the nodes above, or ``model`` if the copy disagrees."""
    import onnx

    simplified = onnx.ModelProto()
    simplified.CopyFrom(model)
    graph = simplified.graph
    removed = (
        _bypass_full_slices(graph, {})
        + _untangle_tensordots(graph)
        + _gather_ids_directly(graph)
        + merge_matmuls_of_one_input(graph)
    )
    shapes = model_shapes(simplified)  # of the untangled graph, where inference sees through
    removed += (
        _bypass_full_slices(graph, shapes)
        + slices_into_split(graph, shapes)
        + weighted_sums_as_matmuls(graph, shapes)
    )
    drop_unused(simplified.graph)
    del simplified.graph.value_info[:]  # shapes of rewritten tensors; ONNX Runtime infers them
    if not removed:
        return model
    mismatch = _mismatch(model, simplified)
    if mismatch is not None:
        logger.warning("Graph kept as converted: the simplified one differs (%s)", mismatch)
        return model
    logger.info(
        "Graph simplified: %d -> %d nodes", len(model.graph.node), len(simplified.graph.node)
    )
    return simplified


def _bypass_full_slices(graph, shapes: dict[str, tuple]) -> int:
    """Slices of every element: to the end of each axis, or of its known length."""
    outputs = {value.name for value in graph.output}
    constants = graph_constants(graph)
    bypassed = 0
    for node in list(graph.node):
        if node.op_type != "Slice" or node.output[0] in outputs:
            continue
        ranges = slice_ranges(node, constants, shapes.get(node.input[0]))
        if ranges is not None and all(start == 0 and end is None for start, end in ranges):
            replace_uses(graph, node.output[0], node.input[0])
            graph.node.remove(node)
            bypassed += 1
    return bypassed


def _untangle_tensordots(graph) -> int:
    """Reshape(x, [-1, K]) -> MatMul -> Reshape(., shape of x's leading axes + [N])."""
    producers = graph_producers(graph)
    consumers = graph_consumers(graph)
    untangled = 0
    for matmul in list(graph.node):
        if matmul.op_type not in _MATMULS:
            continue
        flatten = producers.get(matmul.input[0])
        users = consumers.get(matmul.output[0], [])
        if flatten is None or flatten.op_type != "Reshape" or len(users) != 1:
            continue
        if users[0].op_type != "Reshape" or len(consumers.get(flatten.output[0], [])) != 1:
            continue
        restore = users[0]
        matmul.input[0] = flatten.input[0]
        matmul.output[0] = restore.output[0]
        graph.node.remove(flatten)
        graph.node.remove(restore)
        untangled += 1
    return untangled


def _gather_ids_directly(graph) -> int:
    """A Gather of a table whose ids are arithmetic on a graph input: give it the input."""
    producers = graph_producers(graph)
    inputs = {value.name: value for value in graph.input}
    constants = graph_constants(graph)
    rewired = 0
    for node in graph.node:
        if node.op_type != "Gather" or node.input[1] in inputs:
            continue
        if _table(node.input[0], producers, constants) is None:
            continue
        sources = _graph_inputs_of(node.input[1], producers, inputs)
        integer_sources = [name for name in sources if _is_integer(inputs[name])]
        if len(sources) == 1 and integer_sources:
            node.input[1] = integer_sources[0]
            rewired += 1
    return rewired


def _table(name: str, producers, constants) -> np.ndarray | None:
    """The constant ``name`` is, directly or through quantisation's DequantizeLinear/Cast."""
    while name not in constants:
        node = producers.get(name)
        if node is None or node.op_type not in ("DequantizeLinear", "Cast", "Identity"):
            return None
        name = node.input[0]
    return constants[name]


def _graph_inputs_of(name: str, producers, inputs) -> set[str]:
    """The graph inputs that ``name`` depends on."""
    found, pending, seen = set(), [name], set()
    while pending:
        current = pending.pop()
        if current in seen or not current:
            continue
        seen.add(current)
        if current in inputs:
            found.add(current)
        elif current in producers:
            pending.extend(producers[current].input)
    return found


def _is_integer(value) -> bool:
    from onnx import TensorProto

    return value.type.tensor_type.elem_type in (TensorProto.INT32, TensorProto.INT64)


def _mismatch(original, simplified) -> str | None:
    """None when both graphs give the same outputs on random inputs, else what differed."""
    import onnxruntime as ort

    sessions = [
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        for m in (original, simplified)
    ]
    rng = np.random.default_rng(0)
    for batch in _BATCH_SIZES:
        feeds = _random_feeds(original, batch, rng)
        try:
            expected, got = (session.run(None, feeds) for session in sessions)
        except Exception as error:  # ORT's errors are untyped; either way nothing is checked
            return f"cannot run at batch {batch}: {error}"
        for value, a, b in zip(original.graph.output, expected, got, strict=True):
            if a.shape != b.shape or not np.allclose(a, b, atol=ATOL, rtol=1e-4):
                return f"output {value.name} at batch {batch}"
    return None


def _random_feeds(model, batch: int, rng) -> dict[str, np.ndarray]:
    from onnx import helper

    rows = _id_limit(model)
    feeds = {}
    for value in model.graph.input:
        tensor = value.type.tensor_type
        shape = [d.dim_value if d.dim_value else batch for d in tensor.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        if np.issubdtype(dtype, np.integer):
            feeds[value.name] = rng.integers(0, rows, shape).astype(dtype)
        else:
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def _id_limit(model) -> int:
    """Rows of the smallest table a Gather reads: ids drawn below it are valid everywhere."""
    constants = graph_constants(model.graph)
    producers = graph_producers(model.graph)
    tables = [
        _table(node.input[0], producers, constants)
        for node in model.graph.node
        if node.op_type == "Gather"
    ]
    return min((t.shape[0] for t in tables if t is not None and t.ndim >= 1), default=2)
