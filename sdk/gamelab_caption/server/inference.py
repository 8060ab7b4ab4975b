"""The work one request does on a worker thread: check, decode, caption and maybe search.

Kept apart from the HTTP layer so it is plain Python: bytes in, an ``Analysis`` out, typed
``ImageError`` subclasses (errors.py) for the two ways an upload is refused: too large
(checked from the header, before any pixel decodes) and not an image.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..captioner import Captioner, CaptionResult
from ..preprocessing import load_for_encoder


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


def _milliseconds(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


def analyse(
    captioner: Captioner,
    data: bytes | bytearray,
    *,
    beam_size: int,
    return_attention: bool,
    name_animals: bool = True,
    index: Any = None,
    k: int = 5,
) -> Analysis:
    """Caption the uploaded image and, given a game index, find its ``k`` best games.

    The image is decoded once and the same RGB image goes to the captioner and the index
    (``load_image`` passes a decoded image on without copying it).

    Raises:
        ImageTooLarge: more pixels than ``captioner.max_pixels``.
        NotAnImage: not an image format Pillow knows.
        ImageError: a known format but corrupt or truncated.
    """
    timings = {}
    start = time.perf_counter()
    # Decoded as Captioner.caption decodes bytes, so the page's caption is the SDK's; search
    # decodes its queries the same way.
    image = load_for_encoder(data, captioner.bundle.image_spec, max_pixels=captioner.max_pixels)
    timings["decode"] = _milliseconds(start)
    start = time.perf_counter()
    result = captioner.caption(
        image, beam_size=beam_size, return_attention=return_attention, name_animals=name_animals
    )
    timings["caption"] = _milliseconds(start)
    hits = None
    if index is not None:
        start = time.perf_counter()
        hits = index.search(image, k=k)
        timings["search"] = _milliseconds(start)
    return Analysis(result=result, hits=hits, timings_ms=timings)
