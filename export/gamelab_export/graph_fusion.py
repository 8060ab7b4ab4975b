"""Fewer, larger kernels for the decoder step, where its shapes allow: at its size ONNX
Runtime's cost per node (a few microseconds) is a fair share of a step, and a caption runs
~12 steps.

- Dense layers reading the same tensor (the hidden state feeds the attention query and the
  GRU's recurrent weights) become one wider MatMul (their bias Adds one Add) and a Split:
  each output column computed as before, one call;
- Slices cutting a Split's output into consecutive pieces (the GRU's z, r and h parts of
  that MatMul) become more outputs of the Split;
- attention's context vector, ``sum_l a[r, l] * v[r, l, e]`` written as Unsqueeze, Mul and
  ReduceSum over the whole (R, L, E) product, becomes one batched MatMul (R, 1, L) x (R, L, E).

With ``graph_cleanup``'s rewrites and the attention score's weights in float
(``quantize_decoder``), the default bundle's beam-3 caption took 5-8% less time here (32 test
photos, interleaved rounds; 197 of 200 test captions unchanged). ``graph_cleanup.simplify``
runs these and keeps the result only if the outputs stay the same.
"""

from __future__ import annotations

import numpy as np

from .onnx_graph import (
    graph_constants,
    graph_consumers,
    graph_producers,
    node_attributes,
    slice_ranges,
)

_MERGEABLE = ("Gemm", "MatMul", "MatMulNBits")
_NBITS_ATTRIBUTES = ("K", "bits", "block_size", "accuracy_level")


def merge_matmuls_of_one_input(graph) -> int:
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
        attributes = node_attributes(first)
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

    readers = graph_consumers(graph)
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
    """What a Dense node must share with another to be merged with it (its input, operator,
    settings and weight types); None: not mergeable."""
    if node.op_type not in _MERGEABLE or any(name not in weights for name in node.input[1:]):
        return None
    attributes = node_attributes(node)
    types = tuple(weights[name].data_type for name in node.input[1:])
    if node.op_type == "MatMulNBits":
        if len(node.input) != 3:  # zero points, group ids or bias: not written here
            return None
        return (node.op_type, node.input[0], types, *(attributes[a] for a in _NBITS_ATTRIBUTES))
    if len(weights[node.input[1]].dims) != 2:
        return None
    if node.op_type == "Gemm":
        plain = not attributes.get("transA", 0) and not attributes.get("transB", 0)
        scaled = attributes.get("alpha", 1.0) != 1.0 or attributes.get("beta", 1.0) != 1.0
        if not plain or scaled or (len(node.input) > 2 and len(weights[node.input[2]].dims) != 1):
            return None
    return (node.op_type, node.input[0], types)


def slices_into_split(graph, shapes: dict[str, tuple]) -> int:
    """A Split output cut by Slices into consecutive pieces along the Split's axis (the GRU's
    z, r and h parts of the merged recurrent MatMul) -> those pieces as outputs of the Split."""
    from onnx import numpy_helper

    constants = graph_constants(graph)
    outputs = {value.name for value in graph.output}
    consumers = graph_consumers(graph)
    folded = 0
    for split in [node for node in graph.node if node.op_type == "Split"]:
        sizes = constants.get(split.input[1]) if len(split.input) > 1 else None
        shape = shapes.get(split.input[0])
        if sizes is None or shape is None:
            continue
        axis = node_attributes(split).get("axis", 0)
        axis %= len(shape)
        new_sizes, new_outputs = [], []  # this Split's, with the pieces in place of the cut
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
        if new_outputs != list(split.output):
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
        ranges = slice_ranges(node, constants, piece_shape)
        if ranges is None or any(r != (0, None) for i, r in enumerate(ranges) if i != axis):
            return None
        start, end = ranges[axis]
        cuts.append((start, size if end is None else end, node))
    cuts.sort(key=lambda cut: cut[0])
    ends = [0] + [end for _, end, _ in cuts]
    if [start for start, _, _ in cuts] != ends[:-1] or ends[-1] != size:
        return None
    return [(node, end - start) for start, end, node in cuts]


def weighted_sums_as_matmuls(graph, shapes: dict[str, tuple]) -> int:
    """ReduceSum(Mul(Unsqueeze(a, [2]), v), [1]) for a (R, L), v (R, L, E) ->
    Squeeze(MatMul(Unsqueeze(a, [1]), v), [1])."""
    from onnx import numpy_helper

    constants = graph_constants(graph)
    producers = graph_producers(graph)
    readers = graph_consumers(graph)
    rewritten = 0
    for total in list(graph.node):
        keeps_dims = node_attributes(total).get("keepdims", 1)
        if total.op_type != "ReduceSum" or keeps_dims or len(total.input) != 2:
            continue
        product = producers.get(total.input[0])
        axes = constants.get(total.input[1])
        if product is None or product.op_type != "Mul" or axes is None or list(axes) != [1]:
            continue
        if len(readers.get(product.output[0], [])) != 1:
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
        if len(readers.get(weights.output[0], [])) != 1:
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
