"""The work one request does on a worker thread: check, decode, caption and maybe search.

Kept apart from the HTTP layer so it is plain Python: bytes in, an ``Analysis`` out, typed
``ImageError`` subclasses for the two ways an upload is refused (too large, not an image).
"""

from __future__ import annotations

import io
import time
import warnings
from dataclasses import dataclass
from typing import Any

from PIL import Image

from ..captioner import Captioner, CaptionResult
from ..errors import ImageError
from ..preprocessing import load_image


class ImageTooLarge(ImageError):
    """The image has more pixels than the captioner accepts (a decompression-bomb guard)."""


class NotAnImage(ImageError):
    """Pillow does not recognise the bytes as any image format."""


@dataclass(frozen=True)
class Analysis:
    """What one request computed.

    Attributes:
        result: the caption.
        hits: the best games, best first; None when no search was asked for.
        timings_ms: milliseconds spent in "decode", "caption" and, with a search, "search".
    """

    result: CaptionResult
    hits: list[Any] | None
    timings_ms: dict[str, float]


def _check_header(data: bytes, max_pixels: int) -> None:
    """Refuse unknown formats and oversized images from the header, before any pixel decodes."""
    try:
        with warnings.catch_warnings():
            # Pillow only warns below 2x its own limit; our limit is checked right after.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
    except Image.DecompressionBombError as error:
        raise ImageTooLarge(f"The image is too large: {error}") from None
    except (OSError, SyntaxError, ValueError):  # UnidentifiedImageError is an OSError
        raise NotAnImage(
            "The upload is not an image this server can read (JPEG, PNG, WebP, GIF, BMP, TIFF)"
        ) from None
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"The image has {width}x{height} = {width * height:,} pixels, "
            f"more than the limit of {max_pixels:,}"
        )


def _milliseconds(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


def analyse(
    captioner: Captioner,
    data: bytes,
    *,
    beam_size: int,
    return_attention: bool,
    index: Any = None,
    k: int = 5,
) -> Analysis:
    """Caption the uploaded image and, given a game index, find its ``k`` best games.

    The image is decoded once and the same RGB image goes to the captioner and the index.

    Raises:
        ImageTooLarge: more pixels than ``captioner.max_pixels``.
        NotAnImage: not an image format Pillow knows.
        ImageError: a known format but corrupt or truncated.
    """
    timings = {}
    start = time.perf_counter()
    _check_header(data, captioner.max_pixels)
    image = load_image(data, max_pixels=captioner.max_pixels)
    timings["decode"] = _milliseconds(start)
    start = time.perf_counter()
    result = captioner.caption(image, beam_size=beam_size, return_attention=return_attention)
    timings["caption"] = _milliseconds(start)
    hits = None
    if index is not None:
        start = time.perf_counter()
        hits = index.search(image, k=k)
        timings["search"] = _milliseconds(start)
    return Analysis(result=result, hits=hits, timings_ms=timings)
