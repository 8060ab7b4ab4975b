"""Quantisation with onnxruntime.quantization: static INT8 for the encoder (per-channel
weights, calibrated on real training images through the SDK's preprocessing), 4-bit weights
(or dynamic INT8) for the decoder.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from gamelab_caption.preprocessing import ImageSpec, preprocess

logger = logging.getLogger(__name__)


class _ImageCalibration:
    """CalibrationDataReader over image files, one preprocessed image per call."""

    def __init__(self, paths: list[Path], spec: ImageSpec):
        self._paths = iter(paths)
        self._spec = spec

    def get_next(self) -> dict | None:
        path = next(self._paths, None)
        if path is None:
            return None
        return {"image": preprocess(path, self._spec)[None]}


QUANT_FORMATS = ("qoperator", "qdq")


def quantize_encoder(
    source: str | Path,
    target: str | Path,
    calibration_paths: list[Path],
    spec: ImageSpec,
    quant_format: str = "qoperator",
    reduce_range: bool = True,
) -> Path:
    """Static INT8: per-channel weights, MinMax calibration on ``calibration_paths``.

    ``reduce_range`` keeps weights to 7 bits. On x86 CPUs without VNNI (AVX2, or AVX-512
    without VNNI) ONNX Runtime multiplies uint8 activations by int8 weights with an
    instruction whose pairwise sums saturate at int16; 7-bit weights cannot overflow it.
    With 8-bit weights the default bundle scored Flickr8k test BLEU-4 21.07 / CIDEr 52.5
    on such a CPU (22.24 / 55.3 with VNNI); with 7-bit weights 22.38 / 56.3 there.

    ``quant_format`` "qoperator" writes QLinearConv nodes; "qdq" writes QuantizeLinear /
    DequantizeLinear pairs that ONNX Runtime fuses at load. Both compute the same numbers;
    on EfficientNet-Lite0 (ONNX Runtime 1.30-1.32, 2 threads) QOperator ran 1.1-1.6x faster.
    """
    if quant_format not in QUANT_FORMATS:
        raise ValueError(f"Invalid quant_format {quant_format!r}, expected one of: qoperator, qdq")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration_paths) < 100:
        logger.warning("Calibrating on %d images; >= 100 is advised", len(calibration_paths))
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(target),
            _ImageCalibration(calibration_paths, spec),
            quant_format=QuantFormat.QOperator if quant_format == "qoperator" else QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            reduce_range=reduce_range,
        )
    return Path(target)


DECODER_WEIGHTS = ("int4", "int8")
NBITS_MIN_COLUMNS = 16  # narrower MatMul weights stay float in "int4" (_narrow_matmuls)
QUANTIZATION = {  # a quantised bundle's manifest entry, by decoder weights
    "int4": "encoder static INT8 (7-bit weights); decoder 4-bit MatMul weights (MatMulNBits, "
    "accuracy level 4: INT8 activations per row; weights of fewer than "
    f"{NBITS_MIN_COLUMNS} columns in float), INT8 embeddings",
    "int8": "encoder static INT8 (7-bit weights); decoder dynamic INT8 (7-bit weights)",
}


def quantize_decoder(
    source: str | Path, target: str | Path, weights: str = "int4", block_size: int = 128
) -> Path:
    """Quantise a decoder graph's weights.

    "int4": 4-bit MatMul weights (ONNX Runtime's MatMulNBits, symmetric, one scale per
    ``block_size`` inputs) and INT8 embedding rows; ~40% smaller than "int8". The MatMuls run
    at accuracy level 4: activations are quantised to INT8 per row and block inside the
    kernel, twice as fast as float activations here (a beam-3 step of the three-decoder
    ensemble: 1.0 vs 2.0 ms), and a row's result barely depends on the rest of the batch.
    On the Flickr8k dev split it scored as well as "int8" (two decoders, BLEU-4 beam 3).
    Weights narrower than NBITS_MIN_COLUMNS stay float (``_narrow_matmuls``).
    "int8": dynamic INT8, activations quantised per call with one scale for the whole batch,
    so a caption can change with what it is batched with (8 of 64 photos did); 7-bit weights
    (``reduce_range``), for the reason given in ``quantize_encoder``.
    """
    if weights not in DECODER_WEIGHTS:
        raise ValueError(f"Invalid decoder weights {weights!r}, expected one of: int4, int8")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if weights == "int8":
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=True,
            op_types_to_quantize=["MatMul", "Gather"],
        )
        return Path(target)

    import onnx
    from onnxruntime.quantization import matmul_nbits_quantizer

    # It logs every node it visits at INFO.
    logging.getLogger(matmul_nbits_quantizer.__name__).setLevel(logging.WARNING)
    model = _unfuse_gemm(onnx.load(str(source)))
    quantizer = matmul_nbits_quantizer.MatMulNBitsQuantizer(
        model,
        bits=4,
        block_size=block_size,
        is_symmetric=True,
        accuracy_level=4,
        nodes_to_exclude=_narrow_matmuls(model),
        op_types_to_quantize=("MatMul",),
    )
    quantizer.process()
    with tempfile.TemporaryDirectory() as scratch:
        int4 = Path(scratch) / "int4.onnx"
        quantizer.model.save_model_to_file(str(int4), use_external_data_format=False)
        # Embeddings as INT8 rows: 4-bit Gather needs opset 21, which changes Split/Reduce*.
        quantize_dynamic(
            str(int4),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["Gather"],
        )
    return Path(target)


def _narrow_matmuls(model) -> list[str]:
    """MatMuls with a constant weight of fewer than NBITS_MIN_COLUMNS columns: kept in float.

    The attention score (512 -> 1) was the step's slowest MatMulNBits (a kernel made for wide
    weights, quantising 147 rows of activations for one output each) and 4 bits save 1.5 KB
    there. In float, captions took 2% less time (the shipped step, 32 test photos, 6 rounds
    interleaved: 14.24 against 14.53 ms, both with graph_cleanup); 96 of 100 test captions
    came out the same, 3 of the other 4 were the float-score version's second beam.
    """
    constants = {tensor.name: tuple(tensor.dims) for tensor in model.graph.initializer}
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul"
        and len(constants.get(node.input[1], ())) == 2
        and constants[node.input[1]][1] < NBITS_MIN_COLUMNS
    ]


def _unfuse_gemm(model):
    """Gemm(x, W, b) -> Add(MatMul(x, W), b) for constant W, so MatMulNBits can take W.

    The export's basic graph fusions turned every Dense layer into a Gemm; the 4-bit quantiser
    only rewrites MatMul.
    """
    from onnx import helper

    constants = {tensor.name for tensor in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = (
            not attributes.get("transA", 0)
            and not attributes.get("transB", 0)
            and attributes.get("alpha", 1.0) == 1.0
            and attributes.get("beta", 1.0) == 1.0
        )
        if node.op_type != "Gemm" or node.input[1] not in constants or not plain:
            nodes.append(node)
            continue
        product = f"{node.output[0]}/matmul"
        nodes.append(
            helper.make_node("MatMul", node.input[:2], [product], name=f"{node.name}/MatMul")
        )
        if len(node.input) > 2 and node.input[2]:
            nodes.append(
                helper.make_node(
                    "Add", [product, node.input[2]], node.output[:1], name=f"{node.name}/Add"
                )
            )
        else:
            nodes[-1].output[0] = node.output[0]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def file_sizes(paths: list[Path]) -> dict[str, float]:
    return {p.name: round(p.stat().st_size / 1e6, 2) for p in paths}


def calibration_sample(paths: list[Path], count: int, seed: int = 0) -> list[Path]:
    """A fixed random sample of training images (never dev or test)."""
    order = np.random.default_rng(seed).permutation(len(paths))[:count]
    return [paths[i] for i in sorted(order)]
