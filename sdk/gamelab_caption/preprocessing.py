"""Image loading and normalisation, shared by serving and by the training toolchain.

Every pixel the encoder sees, in training or in production, goes through this module, so
the two can never drift apart. Parameters (size, resize filter, mean/std) come from the
bundle manifest, never from constants duplicated elsewhere.
"""

from __future__ import annotations

import functools
import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError, ImageTooLarge, NotAnImage

DEFAULT_MAX_PIXELS = 50_000_000
_RESIZE_FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}
_BACKGROUND = (255, 255, 255)
PIXEL_DTYPES = ("float32", "uint8")

_ORIENTATION = 0x0112  # the EXIF tag of how the camera was held
ImageInput = str | os.PathLike | bytes | IO[bytes] | Image.Image | np.ndarray


@dataclass(frozen=True)
class ImageSpec:
    """How an encoder wants its pixels.

    Attributes:
        size: (height, width) the image is resized to; aspect ratio is not kept, as in training.
        resize: Pillow filter name, one of bilinear, bicubic, nearest, lanczos.
        mean: per-channel value subtracted from 0..255 RGB.
        std: per-channel divisor applied after the mean.
        dtype: what the encoder graph takes. "float32": ``(rgb - mean) / std``, normalised
            here. "uint8": the 0..255 RGB values themselves; the graph normalises them (a
            quantised encoder whose first step maps them back onto the same uint8 values,
            see the toolchain's ``raw_pixels``), and mean and std say how.
    """

    size: tuple[int, int]
    resize: str = "bilinear"
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.resize not in _RESIZE_FILTERS:
            raise ValueError(
                f"Invalid resize method {self.resize!r}, expected one of: "
                + ", ".join(sorted(_RESIZE_FILTERS))
            )
        if self.dtype not in PIXEL_DTYPES:
            raise ValueError(
                f"Invalid pixel dtype {self.dtype!r}, expected one of: " + ", ".join(PIXEL_DTYPES)
            )

    @classmethod
    def from_dict(cls, spec: dict) -> ImageSpec:
        return cls(
            size=tuple(spec["size"]),
            resize=spec.get("resize", "bilinear"),
            mean=tuple(spec["mean"]),
            std=tuple(spec["std"]),
            dtype=spec.get("dtype", "float32"),  # older bundles took normalised floats
        )

    def to_dict(self) -> dict:
        return {
            "size": list(self.size),
            "resize": self.resize,
            "mean": list(self.mean),
            "std": list(self.std),
            "dtype": self.dtype,
        }


def _describe(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        return f"'{os.fspath(source)}'"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return f"<{type(source).__name__}>"


def _not_found_hint(text: str) -> str:
    """What a path that names no file may have been meant as, for the error message."""
    if re.match(r"[a-z][a-z0-9+.-]+://", text, re.IGNORECASE):  # not "C:/", a drive
        return " (a URL: nothing is downloaded here; fetch it and pass its bytes)"
    if text.startswith("~"):
        return f" (~ is not expanded: {os.path.expanduser(text)!r} may be meant)"
    return ""


def _open(source: object) -> Image.Image:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            raise ImageError(f"{_describe(source)} is a folder, not an image file")
        if not path.is_file():
            raise ImageError(
                f"Image file not found: {_describe(source)}{_not_found_hint(os.fspath(source))}"
            )
        return Image.open(path)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageError("Image bytes are empty")
        return Image.open(io.BytesIO(source))  # shares a bytes object, copies the rest
    if hasattr(source, "read"):
        return Image.open(source)
    raise ImageError(
        f"Unsupported image input type {type(source).__name__}; expected a path, bytes, "
        "a binary file object, a PIL.Image.Image or a uint8 HxWx3 numpy array"
    )


def _from_array(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8:
        raise ImageError(f"Image array must be uint8, got {array.dtype}")
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"Image array must have shape HxWx3 (RGB), got {array.shape}")
    return Image.fromarray(np.ascontiguousarray(array), mode="RGB")


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB; transparency is composited on white, not on black."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16/32-bit greyscale: scale the real range to 0..255 instead of clipping.
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        grey = ((values - low) * scale).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if image.mode != "RGB":
        return image.convert("RGB")
    return image


def load_image(
    source: ImageInput,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
) -> Image.Image:
    """Decode any supported input into an upright RGB Pillow image.

    Args:
        source: a path, bytes, a binary file object, a PIL image or a uint8 HxWx3 RGB array.
        max_pixels: images with more pixels are refused (decompression-bomb guard).
        min_side: a JPEG may be decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling,
            Pillow's ``draft``) as long as both sides stay at least this long. ``None``:
            full size.

    Returns:
        An RGB ``PIL.Image.Image`` with EXIF orientation applied; first frame if animated.

    Raises:
        ImageError: the input is not a usable image; the message names the input.
    """
    if isinstance(source, np.ndarray):
        image = _from_array(source)
    elif isinstance(source, Image.Image):
        image = source
    else:
        try:
            with warnings.catch_warnings():
                # Pillow only warns between MAX_IMAGE_PIXELS and 2x; we check ourselves below.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = _open(source)
        except ImageError:
            raise
        except Image.DecompressionBombError as error:
            raise ImageTooLarge(f"Image {_describe(source)} is too large: {error}") from None
        except UnidentifiedImageError:  # its message names only a Python object
            raise NotAnImage(
                f"Cannot read {_describe(source)} as an image: it is not an image format "
                "Pillow knows"
            ) from None
        except (OSError, SyntaxError, ValueError) as error:
            raise ImageError(f"Cannot read {_describe(source)} as an image: {error}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"Image {_describe(source)} has {width}x{height} = {width * height:,} pixels, "
            f"more than the limit of {max_pixels:,}"
        )
    if width == 0 or height == 0:
        raise ImageError(f"Image {_describe(source)} is empty ({width}x{height})")
    try:
        image.seek(0)  # animated GIF/WebP/APNG: first frame
    except (AttributeError, EOFError):
        pass
    try:
        if min_side is not None and image.format == "JPEG":  # no-op once decoded
            image.draft(None, (min_side, min_side))
        image.load()
        # exif_transpose copies even when there is nothing to turn: a 50 MP image passed
        # on (server -> captioner -> index -> OCR) would be copied at every step.
        if image.getexif().get(_ORIENTATION, 1) != 1:
            image = ImageOps.exif_transpose(image)
        return _to_rgb(image)
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"Image {_describe(source)} is corrupt or truncated: {error}") from None


def to_pixels(image: Image.Image, spec: ImageSpec) -> np.ndarray:
    """Resize and normalise one RGB image.

    Returns:
        (H, W, 3) array, channels last, as the encoder takes it: float32 normalised, or the
        uint8 RGB values when ``spec.dtype`` is "uint8".
    """
    height, width = spec.size
    resized = image.resize((width, height), _RESIZE_FILTERS[spec.resize])
    rgb = np.asarray(resized)  # (H, W, 3) uint8
    if spec.dtype == "uint8":
        return rgb
    table = _normalised_values(spec.mean, spec.std)
    if table.ndim == 1:  # the same for every channel: one lookup
        return np.take(table, rgb)
    return np.stack([np.take(table[:, c], rgb[..., c]) for c in range(3)], axis=-1)


@functools.lru_cache(maxsize=8)
def _normalised_values(mean: tuple, std: tuple) -> np.ndarray:
    """float32 ``(value - mean) / std`` of every uint8 value: (256,) when every channel has
    the same mean and std, else (256, 3).

    A lookup gives the very floats that computing it per pixel gives (the same float32
    operations) in half the time: 0.43 instead of 0.86 ms of a ~10 ms caption here.
    """
    values = np.arange(256, dtype=np.float32)[:, None]
    table = (values - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return table[:, 0].copy() if (table == table[:, :1]).all() else table


def load_for_encoder(
    source: ImageInput, spec: ImageSpec, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """``load_image`` as the caption path decodes: a large JPEG at a reduced scale that keeps
    at least twice the encoder's side (a 12 MP baseline JPEG at 1/4: 4x faster here, a
    sixteenth of the memory; a progressive one gains less), so that the final resize still
    shrinks it about as much as it shrank the ~500-pixel training photos, which are
    themselves decoded in full.
    """
    return load_image(source, max_pixels=max_pixels, min_side=2 * max(spec.size))


def preprocess(
    source: ImageInput, spec: ImageSpec, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """``load_for_encoder`` then ``to_pixels``: the one path from user input to encoder input."""
    return to_pixels(load_for_encoder(source, spec, max_pixels=max_pixels), spec)
