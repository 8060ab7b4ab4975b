"""The encoder's ImageNet classifier, appended to a bundle's encoder graph as an output.

EfficientNet-Lite's checkpoint ships its ImageNet head (global average pool, then a
1280 -> 1000 dense layer) beside the convolutions the encoder uses. The bundle's encoder
already outputs the pooled ``embedding``, so the head is one MatMul, an Add and a Softmax on
it: output ``classes`` (N, 1000), the ImageNet-1k probabilities. The SDK reads them to name
animals the captions never taught (``gamelab_caption.animals``). The ``features`` and
``embedding`` outputs are computed by the same nodes as before, so they stay bit-identical
and game indexes made with the encoder stay valid. In a quantised bundle the MatMul has
4-bit weights (as the decoder's), 0.7 MB instead of 5.1 MB.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from gamelab_caption.bundle import CLASSES, CLASSES_OUTPUT

_PREFIX = "class_head/"


def has_imagenet_head(encoder: str) -> bool:
    """Whether encoder ``encoder``'s checkpoint ships its ImageNet head (EfficientNet-Lite;
    not InceptionV3 from nsfwjs, whose top was retrained)."""
    return encoder.startswith("efficientnet_lite")


def imagenet_head(encoder: str, weights: str | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """The ImageNet head of encoder ``encoder`` as (weight (1280, 1000), bias (1000,)), or
    None for an encoder without one (``has_imagenet_head``)."""
    if not has_imagenet_head(encoder):
        return None
    from .efficientnet_lite import _weights_path
    from .torch_checkpoint import load_legacy_state_dict

    variant = encoder.removeprefix("efficientnet_")
    state = load_legacy_state_dict(weights if weights is not None else _weights_path(variant))
    return state["_fc.weight"].astype(np.float32).T.copy(), state["_fc.bias"].astype(np.float32)


def give_class_head(encoder_path: Path, manifest: dict, config, bits: int | None) -> bool:
    """Append the config's encoder's ImageNet head to ``encoder_path`` and say so in
    ``manifest`` (``encoder.classes`` and the config's ``decoding.animal_threshold``).

    Returns:
        False, touching nothing, when the encoder has no head or the config no threshold.
    """
    head = imagenet_head(config.encoder, config.encoder_weights)
    if head is None or config.animal_threshold is None:
        return False
    add_class_head(encoder_path, *head, bits)
    manifest["encoder"]["classes"] = CLASSES
    manifest["decoding"]["animal_threshold"] = config.animal_threshold
    return True


def has_class_head(path: str | Path) -> bool:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(output.name == CLASSES_OUTPUT for output in graph.output)


def add_class_head(
    path: str | Path, weight: np.ndarray, bias: np.ndarray, bits: int | None
) -> None:
    """Append the head to the encoder graph at ``path``, in place.

    Args:
        path: an encoder graph with an ``embedding`` output (N, D), unnormalised.
        weight, bias: the head, (D, classes) and (classes,).
        bits: 4 for 4-bit MatMul weights (``MatMulNBits``, symmetric, blocks of 32), None
            for float.

    Raises:
        ValueError: the graph has a ``classes`` output already, or no ``embedding``.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    outputs = [output.name for output in model.graph.output]
    if CLASSES_OUTPUT in outputs or "embedding" not in outputs:
        raise ValueError(f"{path}: outputs {outputs}, expected 'embedding' and no 'classes'")
    head = _head_graph(weight, bias, model.opset_import, bits)
    graph = model.graph
    graph.initializer.extend(head.graph.initializer)
    graph.node.extend(head.graph.node)
    graph.output.append(
        helper.make_tensor_value_info(CLASSES_OUTPUT, TensorProto.FLOAT, [None, weight.shape[1]])
    )
    if not any(entry.domain == "com.microsoft" for entry in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _head_graph(weight: np.ndarray, bias: np.ndarray, opsets, bits: int | None):
    """A model embedding (N, D) -> classes (N, C), its node and tensor names prefixed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights, logits, scores = (f"{_PREFIX}{name}" for name in ("weight", "logits", "scores"))
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["embedding", weights], [logits], f"{_PREFIX}matmul"),
            helper.make_node("Add", [logits, f"{_PREFIX}bias"], [scores], f"{_PREFIX}add"),
            helper.make_node("Softmax", [scores], [CLASSES_OUTPUT], f"{_PREFIX}softmax", axis=-1),
        ],
        "class_head",
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [None, weight.shape[0]])],
        [helper.make_tensor_value_info(CLASSES_OUTPUT, TensorProto.FLOAT, [None, weight.shape[1]])],
        [
            numpy_helper.from_array(weight, weights),
            numpy_helper.from_array(bias, f"{_PREFIX}bias"),
        ],
    )
    default = next(entry.version for entry in opsets if entry.domain in ("", "ai.onnx"))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", default)])
    if bits is None:
        return model
    if bits != 4:
        raise ValueError(f"Invalid bits {bits!r}, expected 4 or None")
    import logging

    from onnxruntime.quantization import matmul_nbits_quantizer

    logging.getLogger(matmul_nbits_quantizer.__name__).setLevel(logging.WARNING)
    quantizer = matmul_nbits_quantizer.MatMulNBitsQuantizer(
        model, bits=4, block_size=32, is_symmetric=True, accuracy_level=4
    )
    quantizer.process()
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "head.onnx"
        quantizer.model.save_model_to_file(str(path), use_external_data_format=False)
        quantised = onnx.load(str(path))
    for node in quantised.graph.node:  # the quantiser names what it adds after the MatMul
        node.name = node.name if node.name.startswith(_PREFIX) else _PREFIX + node.name
    return quantised
