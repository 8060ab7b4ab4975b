"""INT8 with onnxruntime.quantization: static QDQ for the encoder (per-channel weights,
calibrated on real training images through the SDK's preprocessing), dynamic for the decoder.
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
) -> Path:
    """Static INT8: per-channel weights, MinMax calibration on ``calibration_paths``.

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
        )
    return Path(target)


def quantize_decoder(source: str | Path, target: str | Path) -> Path:
    """Dynamic INT8 weights for the MatMuls/Gathers; activations quantised on the fly."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul", "Gather"],
    )
    return Path(target)


def file_sizes(paths: list[Path]) -> dict[str, float]:
    return {p.name: round(p.stat().st_size / 1e6, 2) for p in paths}


def calibration_sample(paths: list[Path], count: int, seed: int = 0) -> list[Path]:
    """A fixed random sample of training images (never dev or test)."""
    order = np.random.default_rng(seed).permutation(len(paths))[:count]
    return [paths[i] for i in sorted(order)]
