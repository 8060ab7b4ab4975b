"""The encoder against this CPU's limit: how close does it come to the machine's GEMM peak?

- ``count_macs``: multiply-accumulates of one image through an encoder graph, from the
  Conv/MatMul/Gemm shapes that ONNX shape inference gives (batch fixed at 1).
- ``test_gemm_peak``: a large square GEMM in onnxruntime, FP32 (MatMul) and INT8
  (MatMulInteger, uint8 x int8, the MLAS kernel family QLinearConv also runs on), timed in
  the same session and with the same threads as everything else.
- ``test_sdk_encoder``: the SDK encoder alone; report.py divides its MAC rate by the peak of
  its precision (achieved / bound) and FP32 time by INT8 time (the INT8 speed-up).
- ``test_encoder_profile``: onnxruntime's profiler over the encoder: where the time goes,
  by operator kind, to explain a missed goal.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from gamelab_caption.preprocessing import preprocess

GEMM_SIZE = 2048  # M = N = K: large enough to be compute-bound on a few cores
GEMM_ROUNDS = 10
ENCODER_ROUNDS = 10
PROFILE_ROUNDS = 5
_FUSABLE = ("Add", "Mul", "BatchNormalization", "Clip", "Relu", "LeakyRelu", "HardSigmoid")
_MAC_OPS = ("Conv", "ConvInteger", "QLinearConv", "MatMul", "MatMulInteger", "Gemm")


def _shapes(model) -> dict[str, list[int]]:
    graph = model.graph
    shapes = {i.name: list(i.dims) for i in graph.initializer}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else 0 for d in dims]
    return shapes


def count_macs(path: str | Path) -> dict[str, int]:
    """Multiply-accumulates per image of an ONNX graph, split into dense and depthwise convs.

    Returns:
        {"total", "conv", "depthwise", "matmul"} -> MACs for a batch of 1.
    """
    import onnx

    model = onnx.load(str(path))
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1  # batch 1, so every shape below is known
    shapes = _shapes(onnx.shape_inference.infer_shapes(model, data_prop=True))
    counts: dict[str, int] = defaultdict(int)
    for node in model.graph.node:
        if node.op_type not in _MAC_OPS:
            continue
        output = shapes.get(node.output[0], [])
        if not output or 0 in output:
            raise ValueError(f"{path}: no static shape for {node.op_type} {node.name!r}")
        if node.op_type in ("Conv", "ConvInteger", "QLinearConv"):
            weight = shapes[node.input[3 if node.op_type == "QLinearConv" else 1]]
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            kind = "depthwise" if group > 1 and weight[1] == 1 else "conv"
            counts[kind] += math.prod(output) * math.prod(weight[1:])  # (N,Co,H,W) * Ci/g*kh*kw
        else:
            left = shapes[node.input[0]]
            transposed = any(a.name == "transA" and a.i for a in node.attribute)
            inner = left[0] if transposed else left[-1]
            counts["matmul"] += math.prod(output) * inner
    counts["total"] = counts["conv"] + counts["depthwise"] + counts["matmul"]
    return {k: counts[k] for k in ("total", "conv", "depthwise", "matmul")}


def _gemm_model(precision: str, size: int):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if precision == "fp32":
        weight = rng.standard_normal((size, size), dtype=np.float32)
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
        a_type, y_type, extra = TensorProto.FLOAT, TensorProto.FLOAT, []
    else:
        weight = rng.integers(-127, 128, (size, size), dtype=np.int8)
        node = helper.make_node("MatMulInteger", ["a", "b", "a_zero", "b_zero"], ["y"])
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
        extra = [
            numpy_helper.from_array(np.array(128, np.uint8), "a_zero"),
            numpy_helper.from_array(np.array(0, np.int8), "b_zero"),
        ]
    graph = helper.make_graph(
        [node],
        f"gemm_{precision}",
        [helper.make_tensor_value_info("a", a_type, [size, size])],
        [helper.make_tensor_value_info("y", y_type, [size, size])],
        [numpy_helper.from_array(weight, "b"), *extra],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9  # older onnxruntime releases read no newer IR
    return model


def _session(model_bytes: bytes, threads: int, profile_prefix: str | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_gemm_peak(benchmark, precision, settings, record):
    pytest.importorskip("onnx")
    session = _session(_gemm_model(precision, GEMM_SIZE).SerializeToString(), settings.threads)
    rng = np.random.default_rng(1)
    if precision == "fp32":
        a = rng.standard_normal((GEMM_SIZE, GEMM_SIZE), dtype=np.float32)
    else:
        a = rng.integers(0, 256, (GEMM_SIZE, GEMM_SIZE), dtype=np.uint8)
    benchmark.pedantic(lambda: session.run(None, {"a": a}), rounds=GEMM_ROUNDS, warmup_rounds=2)
    record(
        benchmark,
        "gemm peak",
        kind="gemm",
        precision=precision,
        size=GEMM_SIZE,
        macs=GEMM_SIZE**3,
        threads=settings.threads,
    )


_MACS: dict[str, dict] = {}


def _encoder_macs(path: Path) -> dict:
    if str(path) not in _MACS:
        _MACS[str(path)] = count_macs(path)
    return _MACS[str(path)]


def test_sdk_encoder(benchmark, bundle, batch, threads, captioners, images, record):
    pytest.importorskip("onnx")
    captioner = captioners(bundle.path, threads=threads)
    spec = captioner.bundle.image_spec
    paths = [images.paths[i % len(images.paths)] for i in range(batch)]
    pixels = np.stack([preprocess(p, spec) for p in paths])  # (N, H, W, 3)
    benchmark.pedantic(lambda: captioner.encode(pixels), rounds=ENCODER_ROUNDS, warmup_rounds=2)
    # MACs do not depend on precision; count them on the FP32 graph, whose shapes ONNX shape
    # inference knows (it does not infer QLinearConv outputs): a run folder's, where given.
    fp32 = bundle.run.bundles.get("fp32") if bundle.run else None
    if fp32 is None and bundle.precision == "fp32":
        fp32 = bundle.path
    macs = _encoder_macs(fp32 / captioner.bundle.manifest["graphs"]["encoder"]) if fp32 else {}
    record(
        benchmark,
        "encoder",
        kind="encoder",
        **bundle.fields,
        batch=batch,
        provider=captioner.providers[0],
        threads=threads,
        macs_per_image=macs.get("total"),
        macs_split=macs or None,
    )


def _conv_kinds(path: Path) -> dict[str, str]:
    """Name -> "depthwise", "1x1" or "kxk" for every convolution of a graph.

    Keys are the node's name, its output tensor's name and the outputs of the element-wise
    ops that follow it (bias, activation): onnxruntime names some fused kernels after those
    ("Conv__323_token_0", "Conv__333:0_nchwc", ".../Relu6:0_nchwc").
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    kinds = {}
    for node in model.graph.node:
        if "Conv" in node.op_type:
            attributes = {a.name: a for a in node.attribute}
            group = attributes["group"].i if "group" in attributes else 1
            kernel = list(attributes["kernel_shape"].ints) if "kernel_shape" in attributes else []
            kind = "depthwise" if group > 1 else "kxk"
            if kind == "kxk" and kernel and math.prod(kernel) == 1:
                kind = "1x1"
            kinds[node.name] = kinds[node.output[0]] = kind
        elif node.op_type in _FUSABLE and node.input and node.input[0] in kinds:
            kinds[node.output[0]] = kinds[node.input[0]]  # nodes are in topological order
    return kinds


def _kind(event: dict, conv_kinds: dict[str, str]) -> str:
    """Operator kind of one profiled kernel, convolutions split by shape."""
    op = event["args"].get("op_name", "?")
    if "Conv" not in op:
        return op
    name = re.sub(r"(_token_\d+)?(_nchwc)?_kernel_time$", "", event["name"])
    return f"{op} {conv_kinds.get(name, 'other')}"


def test_encoder_profile(benchmark, bundle, settings, images, captioners, record, tmp_path):
    """Time share of each operator kind in the encoder (profiling slows it a little)."""
    captioner = captioners(bundle.path)
    pixels = preprocess(images.paths[0], captioner.bundle.image_spec)[None]  # (1, H, W, 3)
    path = captioner.bundle.graph_path("encoder")
    session = _session(path.read_bytes(), settings.threads, str(tmp_path / "encoder"))
    benchmark.pedantic(
        lambda: session.run(None, {"image": pixels}), rounds=PROFILE_ROUNDS, warmup_rounds=1
    )
    events = json.loads(Path(session.end_profiling()).read_text())
    conv_kinds = _conv_kinds(path)
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            totals[_kind(event, conv_kinds)] += event["dur"]
    all_kernels = sum(totals.values()) or 1.0
    share = {
        k: round(100 * v / all_kernels, 1) for k, v in sorted(totals.items(), key=lambda x: -x[1])
    }
    record(
        benchmark,
        "encoder profile",
        kind="profile",
        pipeline="sdk",
        run=bundle.source,
        bundle=bundle.bundle_name,
        precision=bundle.precision,
        batch=1,
        op_share_percent=share,
    )
