"""Take out of a converted graph the nodes that tf2onnx adds and that compute nothing here,
and give ONNX Runtime fewer, larger kernels where the decoder's shapes allow.

The decoder step runs ~12 times a caption, and at its size ONNX Runtime's cost per node
(a few microseconds) is a fair share of the step: of the 60 nodes tf2onnx writes for it, 18
are bookkeeping. Five rewrites, each checked by running the graph before and after:

- full-range ``Slice`` (``x[:, None, :]`` becomes Unsqueeze + a Slice of everything);
- Keras' Dense on a 3-D input (``tensordot``): Reshape to 2-D, MatMul, Reshape back through
  a Shape/Gather/Concat chain; ONNX's MatMul takes the 3-D input as it is;
- Keras 3's embedding lookup wraps negative ids (``where(id < 0, id + V, id)``, 8 nodes);
  the ids here are vocabulary rows, never negative, so the Gather takes them directly;
- Dense layers reading the same tensor (the hidden state feeds the attention query and the
  GRU's recurrent weights) become one wider MatMul and a Split: the same numbers, one call;
- attention's context vector, ``sum_l a[r, l] * v[r, l, e]`` written as Unsqueeze, Mul and
  ReduceSum over the whole (R, L, E) product, becomes one batched MatMul (R, 1, L) x (R, L, E).

With the last two and the attention score's weights in float (``quantize_decoder``), the
default bundle's beam-3 caption took 8% less time here (32 test photos, 24 interleaved
rounds; 197 of 200 test captions unchanged).

``simplify`` keeps the rewritten graph only if it gives the original's outputs on random
inputs at two batch sizes (ids drawn from the real vocabulary); otherwise the original.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

_MATMULS = ("MatMul", "MatMulNBits")
_INT64_MAX = np.iinfo(np.int64).max
# A Slice end at least this large runs to the end of its axis: tf2onnx writes 1e9 for a
# masked end (``x[:, None]``), INT32_MAX or INT64_MAX for others; no axis here is that long.
_WHOLE_AXIS = 1_000_000_000
_MERGEABLE = ("Gemm", "MatMul", "MatMulNBits")
_NBITS_ATTRIBUTES = ("K", "bits", "block_size", "accuracy_level")
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
        + _merge_matmuls_of_one_input(graph)
    )
    shapes = _shapes(simplified)  # of the untangled graph, where inference sees through
    removed += (
        _bypass_full_slices(graph, shapes)
        + _slices_into_split(graph, shapes)
        + _weighted_sums_as_matmuls(graph, shapes)
    )
    _drop_unused(simplified.graph)
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


def _constants(graph) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _producers(graph) -> dict[str, object]:
    return {output: node for node in graph.node for output in node.output}


def _replace_uses(graph, old: str, new: str) -> None:
    """Nodes read ``new`` where they read ``old`` (never a graph output: callers skip those)."""
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]


def _bypass_full_slices(graph, shapes: dict[str, tuple]) -> int:
    """Slices of every element: to the end of each axis, or of its known length."""
    outputs = {value.name for value in graph.output}
    bypassed = 0
    for node in list(graph.node):
        if node.op_type != "Slice" or node.output[0] in outputs:
            continue
        ranges = _slice_ranges(node, _constants(graph), shapes.get(node.input[0]))
        if ranges is not None and all(start == 0 and end is None for start, end in ranges):
            _replace_uses(graph, node.output[0], node.input[0])
            graph.node.remove(node)
            bypassed += 1
    return bypassed


def _slice_ranges(node, constants, shape: tuple | None) -> list[tuple[int, int | None]] | None:
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
        whole = end >= _WHOLE_AXIS or (length is not None and end >= length)
        ranges[axis % rank] = (start, None if whole else end)
    return ranges


def _slices_into_split(graph, shapes: dict[str, tuple]) -> int:
    """A Split output cut by Slices into consecutive pieces along the Split's axis (the GRU's
    z, r and h parts of the merged recurrent MatMul) -> those pieces as outputs of the Split."""
    from onnx import helper, numpy_helper

    constants = _constants(graph)
    outputs = {value.name for value in graph.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    folded = 0
    for split in [node for node in graph.node if node.op_type == "Split"]:
        sizes = constants.get(split.input[1]) if len(split.input) > 1 else None
        shape = shapes.get(split.input[0])
        if sizes is None or shape is None:
            continue
        axis = {a.name: helper.get_attribute_value(a) for a in split.attribute}.get("axis", 0)
        axis %= len(shape)
        new_sizes, new_outputs = [], []
        for size, output in zip(sizes.tolist(), split.output, strict=True):
            pieces = _consecutive_pieces(consumers.get(output, []), axis, size, constants, shape)
            if pieces is None or any(piece.output[0] in outputs for piece, _ in pieces):
                new_sizes.append(size)
                new_outputs.append(output)
                continue
            for piece, width in pieces:
                new_sizes.append(width)
                new_outputs.append(piece.output[0])
                graph.node.remove(piece)
                folded += 1
        if folded:
            name = f"{split.output[0]}/sizes"
            graph.initializer.append(numpy_helper.from_array(np.array(new_sizes, np.int64), name))
            split.input[1] = name
            split.output[:] = new_outputs
    return folded


def _consecutive_pieces(slices, axis: int, size: int, constants, shape) -> list | None:
    """[(Slice, width)] in order when ``slices`` cut [0, size) along ``axis`` into consecutive
    pieces and keep every other axis whole; else None."""
    if len(slices) < 2 or any(node.op_type != "Slice" for node in slices):
        return None
    piece_shape = tuple(size if i == axis else d for i, d in enumerate(shape))
    cuts = []
    for node in slices:
        ranges = _slice_ranges(node, constants, piece_shape)
        if ranges is None or any(r != (0, None) for i, r in enumerate(ranges) if i != axis):
            return None
        start, end = ranges[axis]
        cuts.append((start, size if end is None else end, node))
    cuts.sort(key=lambda cut: cut[0])
    ends = [0] + [end for _, end, _ in cuts]
    if [start for start, _, _ in cuts] != ends[:-1] or ends[-1] != size:
        return None
    return [(node, end - start) for start, end, node in cuts]


def _untangle_tensordots(graph) -> int:
    """Reshape(x, [-1, K]) -> MatMul -> Reshape(., shape of x's leading axes + [N])."""
    producers = _producers(graph)
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
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
    producers = _producers(graph)
    inputs = {value.name: value for value in graph.input}
    constants = _constants(graph)
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


def _merge_matmuls_of_one_input(graph) -> int:
    """Dense layers with constant weights that read the same tensor -> one layer (its bias
    Adds too, when each has one) and one Split."""
    from onnx import helper, numpy_helper

    weights = {tensor.name: tensor for tensor in graph.initializer}
    groups: dict[tuple, list] = {}
    for node in graph.node:
        key = _merge_key(node, weights)
        if key is not None:
            groups.setdefault(key, []).append(node)
    merged = 0
    for nodes in (group for group in groups.values() if len(group) > 1):
        first = nodes[0]
        name = f"{first.name}/merged"
        arrays = [[numpy_helper.to_array(weights[n]) for n in node.input[1:]] for node in nodes]
        if first.op_type == "MatMulNBits":  # weights (N, blocks, bytes), scales by N first
            widths = [a[0].shape[0] for a in arrays]
            axes = (0, 0)
        else:  # weights (K, N), bias (N,)
            widths = [a[0].shape[1] for a in arrays]
            axes = (1, 0)
        inputs = [first.input[0]]
        for position, axis in enumerate(axes[: len(first.input) - 1]):
            joined = np.concatenate([a[position] for a in arrays], axis=axis)
            graph.initializer.append(numpy_helper.from_array(joined, f"{name}/input{position}"))
            inputs.append(f"{name}/input{position}")
        attributes = {a.name: helper.get_attribute_value(a) for a in first.attribute}
        if first.op_type == "MatMulNBits":
            attributes["N"] = sum(widths)
        new_nodes = [
            helper.make_node(
                first.op_type, inputs, [f"{name}:0"], name=name, domain=first.domain, **attributes
            )
        ]
        pieces = [node.output[0] for node in nodes]
        biases = _bias_adds(graph, nodes, widths, weights) if first.op_type != "Gemm" else None
        if biases is not None:  # (N,) each: one Add before the Split
            joined = np.concatenate([bias for _, bias in biases])
            graph.initializer.append(numpy_helper.from_array(joined, f"{name}/bias"))
            new_nodes.append(
                helper.make_node(
                    "Add", [f"{name}:0", f"{name}/bias"], [f"{name}/biased:0"], name=f"{name}/add"
                )
            )
            pieces = [add.output[0] for add, _ in biases]
        graph.initializer.append(numpy_helper.from_array(np.array(widths, np.int64), f"{name}/w"))
        new_nodes.append(
            helper.make_node(
                "Split",
                [new_nodes[-1].output[0], f"{name}/w"],
                pieces,
                name=f"{name}/split",
                axis=-1,
            )
        )
        at = list(graph.node).index(first)
        for node in nodes + [add for add, _ in biases or ()]:
            graph.node.remove(node)
        for node in reversed(new_nodes):
            graph.node.insert(at, node)
        merged += len(nodes) - 1
    return merged


def _bias_adds(graph, nodes, widths, weights) -> list[tuple] | None:
    """[(Add, bias (N,))] when each node's output is read only by an Add of a constant (N,)."""
    from onnx import numpy_helper

    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {value.name for value in graph.output}
    found = []
    for node, width in zip(nodes, widths, strict=True):
        users = readers.get(node.output[0], [])
        if len(users) != 1 or users[0].op_type != "Add" or node.output[0] in outputs:
            return None
        add = users[0]
        other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
        if other not in weights or tuple(weights[other].dims) != (width,):
            return None
        found.append((add, numpy_helper.to_array(weights[other])))
    return found


def _merge_key(node, weights) -> tuple | None:
    """What a Dense node must share with another to be merged with it; None: not mergeable."""
    from onnx import helper

    if node.op_type not in _MERGEABLE or any(name not in weights for name in node.input[1:]):
        return None
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "MatMulNBits":
        if len(node.input) != 3:  # zero points, group ids or bias: not written here
            return None
        return (node.op_type, node.input[0], *(attributes[a] for a in _NBITS_ATTRIBUTES))
    if len(weights[node.input[1]].dims) != 2:
        return None
    if node.op_type == "Gemm":
        plain = not attributes.get("transA", 0) and not attributes.get("transB", 0)
        scaled = attributes.get("alpha", 1.0) != 1.0 or attributes.get("beta", 1.0) != 1.0
        if not plain or scaled or (len(node.input) > 2 and len(weights[node.input[2]].dims) != 1):
            return None
    return (node.op_type, node.input[0], len(node.input))


def _weighted_sums_as_matmuls(graph, shapes: dict[str, tuple]) -> int:
    """ReduceSum(Mul(Unsqueeze(a, [2]), v), [1]) for a (R, L), v (R, L, E) ->
    Squeeze(MatMul(Unsqueeze(a, [1]), v), [1])."""
    from onnx import numpy_helper

    constants = _constants(graph)
    producers = _producers(graph)
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    rewritten = 0
    for total in list(graph.node):
        if total.op_type != "ReduceSum" or _keeps_dims(total) or len(total.input) != 2:
            continue
        product = producers.get(total.input[0])
        axes = constants.get(total.input[1])
        if product is None or product.op_type != "Mul" or axes is None or list(axes) != [1]:
            continue
        if uses.get(product.output[0]) != 1:
            continue
        weights, values = (producers.get(name) for name in product.input)
        if values is not None and values.op_type == "Unsqueeze":
            weights, values = values, weights
        if weights is None or weights.op_type != "Unsqueeze" or len(weights.input) != 2:
            continue
        other = product.input[1] if product.input[0] == weights.output[0] else product.input[0]
        unsqueezed = constants.get(weights.input[1])
        if unsqueezed is None or list(unsqueezed) not in ([2], [-1]):
            continue
        if len(shapes.get(weights.input[0], ())) != 2 or len(shapes.get(other, ())) != 3:
            continue
        if uses.get(weights.output[0]) != 1:
            continue
        axis_one = f"{total.name}/axis1"
        graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), axis_one))
        weights.input[1] = axis_one  # (R, 1, L)
        product.op_type = "MatMul"  # (R, 1, E)
        product.input[:] = [weights.output[0], other]
        total.op_type = "Squeeze"  # (R, E)
        total.input[1] = axis_one
        del total.attribute[:]
        rewritten += 1
    return rewritten


def _keeps_dims(node) -> bool:
    from onnx import helper

    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return bool(attributes.get("keepdims", 1))


def _shapes(model) -> dict[str, tuple]:
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


def _drop_unused(graph) -> None:
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
    constants = _constants(model.graph)
    producers = _producers(model.graph)
    tables = [
        _table(node.input[0], producers, constants)
        for node in model.graph.node
        if node.op_type == "Gather"
    ]
    return min((t.shape[0] for t in tables if t is not None and t.ndim >= 1), default=2)
