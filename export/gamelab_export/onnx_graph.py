"""Reading ONNX graphs for the rewrites of ``graph_cleanup`` and ``graph_fusion``: constants,
producers, shapes, slice ranges, and dropping what no output needs."""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

# A Slice end at least this large runs to the end of its axis: tf2onnx writes 1e9 for a
# masked end (``x[:, None]``), INT32_MAX or INT64_MAX for others; no axis here is that long.
WHOLE_AXIS = 1_000_000_000


def node_attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def graph_consumers(graph) -> dict[str, list]:
    """Tensor name -> the nodes that read it."""
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def graph_constants(graph) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def graph_producers(graph) -> dict[str, object]:
    return {output: node for node in graph.node for output in node.output}


def replace_uses(graph, old: str, new: str) -> None:
    """Nodes read ``new`` where they read ``old`` (never a graph output: callers skip those)."""
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]


def slice_ranges(node, constants, shape: tuple | None) -> list[tuple[int, int | None]] | None:
    """(start, end) per axis of a Slice with constant inputs and steps of 1, end None where it
    runs to the end of the axis; None when that cannot be told (or the Slice steps)."""
    inputs = list(node.input) + [""] * (5 - len(node.input))
    starts, ends, axes, steps = (constants.get(name) for name in inputs[1:5])
    if starts is None or ends is None or (inputs[3] and axes is None):
        return None
    if (inputs[4] and steps is None) or (steps is not None and (steps != 1).any()):
        return None
    axes = np.arange(len(starts)) if axes is None else axes
    if shape is None and (axes < 0).any():
        return None
    rank = len(shape) if shape is not None else int(axes.max()) + 1
    ranges: list[tuple[int, int | None]] = [(0, None)] * rank
    for axis, start, end in zip(axes.tolist(), starts.tolist(), ends.tolist(), strict=True):
        length = None if shape is None else shape[axis]
        if start < 0 or end < 0:  # from the end: not written by tf2onnx here
            return None
        whole = end >= WHOLE_AXIS or (length is not None and end >= length)
        ranges[axis % rank] = (start, None if whole else end)
    return ranges


def model_shapes(model) -> dict[str, tuple]:
    """Each tensor's shape where shape inference can tell it, None for unknown sizes.

    ONNX Runtime's symbolic inference knows its own operators (MatMulNBits) too; ONNX's is
    the fallback.
    """
    import onnx

    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        graph = SymbolicShapeInference.infer_shapes(model, auto_merge=True).graph
    except Exception as error:  # it raises bare Exceptions on graphs it cannot follow
        logger.debug("Symbolic shape inference failed (%s); ONNX's instead", error)
        graph = onnx.shape_inference.infer_shapes(model).graph
    return {
        value.name: tuple(
            dim.dim_value if dim.HasField("dim_value") else None
            for dim in value.type.tensor_type.shape.dim
        )
        for value in [*graph.input, *graph.output, *graph.value_info]
        if value.type.tensor_type.HasField("shape")
    }


def drop_unused(graph) -> None:
    needed = {value.name for value in graph.output}
    kept = []
    for node in reversed(list(graph.node)):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    for init in list(graph.initializer):
        if init.name not in needed:
            graph.initializer.remove(init)
