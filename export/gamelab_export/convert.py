"""TensorFlow -> ONNX for the three graphs of a bundle (names and shapes: see the SDK's
captioner.py). ``tf2onnx.convert.from_function`` is used because ``from_keras`` breaks on
Keras 3; tf2onnx names tensors after TF ops, so inputs and outputs are renamed afterwards.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

OPSET = 17


def _rename_io(model, inputs: list[str], outputs: list[str]) -> None:
    """Give graph inputs/outputs the contract's names, in order, fixing every reference."""
    graph = model.graph
    renames = {}
    for value, name in zip(graph.input, inputs, strict=True):
        renames[value.name] = name
    for value, name in zip(graph.output, outputs, strict=True):
        renames[value.name] = name
    for value in [*graph.input, *graph.output]:
        value.name = renames.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]


def _convert(function, signature, inputs: list[str], outputs: list[str], path: Path) -> Path:
    import onnx
    import tf2onnx

    from .graph_cleanup import simplify

    model, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=OPSET)
    _rename_io(model, inputs, outputs)
    model = simplify(model)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    _fold_constants_and_batchnorm(path)
    logger.info("Wrote %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path


def _fold_constants_and_batchnorm(path: Path) -> None:
    """Rewrite ``path`` with ONNX Runtime's basic, hardware-independent graph fusions.

    tf2onnx leaves the BatchNorm after each depthwise conv as a Mul and an Add; unfused, they
    become 32 extra quantised ops (about 30% of INT8 encoder time). Fusing them into the
    convolution here makes the FP32 graph, and the INT8 graph made from it, clean for any
    runtime version.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(path)
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def encoder_function(encoder, spec):
    """The encoder graph as a tf.function: image -> features (N, L, D), embedding (N, D)."""
    import tensorflow as tf

    locations = spec.grid[0] * spec.grid[1]

    @tf.function(input_signature=[tf.TensorSpec((None, *spec.image.size, 3), tf.float32)])
    def encode(image):
        feature_map = encoder(image, training=False)  # (N, h, w, D)
        features = tf.reshape(feature_map, (-1, locations, spec.feature_dim))  # (N, L, D)
        return features, tf.reduce_mean(features, axis=1)  # pooled embedding for search

    return encode


def decoder_functions(decoder, locations: int, feature_dim: int):
    """decoder_init and decoder_step as tf.functions over the trained Keras decoder."""
    import tensorflow as tf

    memory_width, key_width, units = decoder.memory_width, decoder.key_width, decoder.state_width
    slots = locations + decoder.extra_slots  # memory rows: the image's, then the classes'

    @tf.function(input_signature=[tf.TensorSpec((None, locations, feature_dim), tf.float32)])
    def init(features):
        return decoder.initial_state(features)

    @tf.function(
        input_signature=[
            tf.TensorSpec((None,), tf.int64),
            tf.TensorSpec((None, units), tf.float32),
            tf.TensorSpec((None, slots, memory_width), tf.float32),
            tf.TensorSpec((None, slots, key_width), tf.float32),
        ]
    )
    def step(token, hidden, memory, keys):
        logits, next_hidden, attention = decoder.step(token, hidden, memory, keys)
        # The graph's log_probs are normalised here, once: the SDK's beam search does not
        # renormalise, and an ensemble's scores (a mean of log-probs) are not normalised.
        if decoder.extra_slots:
            # The attention the SDK returns is over the image: the class slot's share is left
            # out and the locations' renormalised, so that it stays a heat map summing to 1.
            attention = attention[:, :locations]
            attention /= tf.reduce_sum(attention, axis=-1, keepdims=True)
        return tf.nn.log_softmax(logits), next_hidden, attention

    return init, step


def export_encoder(encoder, spec, path: str | Path) -> Path:
    function = encoder_function(encoder, spec)
    return _convert(
        function, function.input_signature, ["image"], ["features", "embedding"], Path(path)
    )


def export_decoder(
    decoder, locations: int, feature_dim: int, init_path: str | Path, step_path: str | Path
) -> tuple[Path, Path]:
    """Write the decoder_init and decoder_step graphs to ``init_path`` and ``step_path``."""
    init, step = decoder_functions(decoder, locations, feature_dim)
    init_path = _convert(
        init, init.input_signature, ["features"], ["memory", "keys", "hidden"], Path(init_path)
    )
    step_path = _convert(
        step,
        step.input_signature,
        ["token", "hidden", "memory", "keys"],
        ["log_probs", "next_hidden", "attention"],
        Path(step_path),
    )
    return init_path, step_path
