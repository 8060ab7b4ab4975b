"""Read the text in an image: title screens, box art and cartridge labels carry the game's name.

PP-OCRv4's text detector and recogniser, as the ``rapidocr-onnxruntime`` wheel ships them
(Apache-2.0), on ONNX Runtime: nothing downloads. It needs OpenCV, so it lives in the ``ocr``
extra (which ``serve`` includes); the light runtime never imports it.

Speed is the constraint (a search answers in ~200 ms on 2 cores): the detector runs on the
image scaled to ``DETECT_SIDE`` pixels on its short side, and only the ``MAX_LINES`` tallest
text boxes are recognised, since a title is the largest text on a title screen or a box, and
"PUSH START BUTTON" and copyright lines are small. Each line is recognised alone at its own
width: RapidOCR's batches pad every line to the widest and to at least 320 pixels, which made
four lines of a title screen cost 820 ms here instead of 260 ms.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .preprocessing import DEFAULT_MAX_PIXELS, ImageInput, load_image

OCR_INSTALL = "pip install 'gamelab-caption-sdk[ocr]'"
DETECT_SIDE = 320  # short side the detector sees; native 320x224 screens stay near native
MAX_LINES = 4  # tallest boxes recognised
MIN_CONFIDENCE = 0.5  # recogniser's mean character probability below which a read is noise
# Horizontal bands (top, bottom as fractions of the height) recognised whole by read_bands:
# overlapping, so a logo in any of the upper five sixths falls wholly inside one.
BANDS = ((0.0, 0.35), (0.15, 0.5), (0.3, 0.65), (0.5, 0.85))
_LINE_HEIGHT = 48  # the recogniser's input height

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextLine:
    """One line of text read in an image.

    Attributes:
        text: what was read, as the recogniser spelt it.
        confidence: the recogniser's mean character probability, 0..1.
        height: the box's height as a fraction of the image's height (titles are tall).
    """

    text: str
    confidence: float
    height: float


def ocr_available() -> bool:
    """Whether the ``ocr`` extra is installed (the reader and the fuzzy matcher)."""
    try:
        import rapidfuzz  # noqa: F401
        import rapidocr_onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def brightest_channel(picture: Image.Image) -> Image.Image:
    """Each pixel's brightest RGB channel, as grey: a second view for OCR.

    8-bit title logos are shaded in bands and gradients of dark colours, which PP-OCR often
    reads as nothing; in each pixel's brightest channel such letters become one bright shape
    on the dark screen. On 150 libretro title screens, names found by the text alone: 68 for
    the plain read, 49 for this view, 75 reading this view where the plain read named no game
    (what search does), at a p50 of 160 instead of 137 ms.
    """
    brightest = np.asarray(picture.convert("RGB")).max(axis=2)  # (H, W) uint8
    return Image.fromarray(brightest, mode="L").convert("RGB")


class TextReader:
    """PP-OCR text detection and recognition of the tallest lines in an image.

    Args:
        max_lines: the tallest text boxes recognised.
        detect_side: the short side, in pixels, the detector sees.
        threads: ONNX Runtime intra-op threads; None for its default (the fastest here).

    Raises:
        ImportError: the ``ocr`` extra is not installed (the message says how to install it).
    """

    def __init__(
        self,
        *,
        max_lines: int = MAX_LINES,
        detect_side: int = DETECT_SIDE,
        threads: int | None = None,
    ):
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as error:
            raise ImportError(f"Reading text needs the ocr extra: {OCR_INSTALL}") from error
        if max_lines < 1:
            raise ValueError(f"max_lines must be >= 1, got {max_lines}")
        self.max_lines = max_lines
        self._engine = RapidOCR(
            det_limit_side_len=detect_side,
            det_limit_type="min",
            intra_op_num_threads=-1 if threads is None else threads,
            print_verbose=False,
        )
        # RapidOCR's detector keeps per-call state in its pre/post-processing objects.
        self._lock = threading.Lock()

    def read(self, image: ImageInput, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[TextLine]:
        """The ``max_lines`` tallest lines of text, in reading order; [] when none is legible.

        Args:
            image: a path, bytes, binary file object, PIL image or uint8 HxWx3 RGB array.
            max_pixels: refuse larger images (decompression-bomb guard).

        Raises:
            ImageError: the image is unusable.
        """
        picture = load_image(image, max_pixels=max_pixels)
        pixels = np.asarray(picture.convert("RGB"))  # (H, W, 3) uint8
        engine = self._engine
        with self._lock:
            boxes, _ = engine.text_det(pixels)
            if boxes is None or len(boxes) == 0:
                return []
            heights = np.array([np.linalg.norm(box[0] - box[3]) for box in boxes])  # (N,)
            tallest = np.argsort(-heights, kind="stable")[: self.max_lines]
            # back to reading order: top to bottom, then left to right
            tallest = sorted(tallest, key=lambda i: (boxes[i][0][1], boxes[i][0][0]))
            crops = engine.get_crop_img_list(pixels, [boxes[i] for i in tallest])
            reads = [self._recognise(crop) for crop in crops]
        lines = [
            TextLine(text.strip(), float(confidence), float(heights[i]) / pixels.shape[0])
            for i, (text, confidence) in zip(tallest, reads, strict=True)
        ]
        return [line for line in lines if line.text and line.confidence >= MIN_CONFIDENCE]

    def read_bands(
        self,
        image: ImageInput,
        *,
        bands: tuple[tuple[float, float], ...] = BANDS,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> list[TextLine]:
        """Each horizontal band of the image recognised as one line, without detection; a
        text read again in the next (overlapping) band is kept once.

        The detector finds no box around many stylised 8-bit logos, yet the recogniser reads
        them when it sees the band of the screen they fill ("ESWAT", "WIMBLEDON", "TRI
        FORNATON"). On 150 libretro title screens, names found by text alone: 72 reading
        the plain image and then its brightest channel, 80 reading these bands after both
        named no game (4 bands: 38 ms; 3 bands: 76, 6 bands: 81).

        Raises:
            ImageError: the image is unusable.
        """
        picture = load_image(image, max_pixels=max_pixels)
        pixels = np.asarray(picture.convert("RGB"))  # (H, W, 3) uint8
        height = pixels.shape[0]
        lines = []
        with self._lock:
            for top, bottom in bands:
                band = pixels[int(top * height) : max(int(bottom * height), int(top * height) + 1)]
                text, confidence = self._recognise(band)
                lines.append(TextLine(text.strip(), confidence, bottom - top))
        read = {}  # text -> its first line: overlapping bands often read the same
        for line in lines:
            if line.text and line.confidence >= MIN_CONFIDENCE:
                read.setdefault(line.text, line)
        return list(read.values())

    def _recognise(self, crop: np.ndarray) -> tuple[str, float]:
        """One line crop (h, w, 3) uint8 -> (text, mean character probability)."""
        import cv2  # comes with rapidocr-onnxruntime

        recogniser = self._engine.text_rec
        height, width = crop.shape[:2]
        # the line's own width, in steps of 8 (the recogniser downsamples width by 8)
        size = max(32, math.ceil(_LINE_HEIGHT * width / max(height, 1) / 8) * 8)
        line = cv2.resize(crop, (size, _LINE_HEIGHT)).astype(np.float32)  # (48, W, 3)
        line = line.transpose(2, 0, 1)[None] / 127.5 - 1.0  # (1, 3, 48, W) in -1..1
        probabilities = recogniser.session(line)[0]  # (1, W / 8, characters)
        ratio = size / _LINE_HEIGHT
        text, confidence = recogniser.postprocess_op(
            probabilities, False, wh_ratio_list=[ratio], max_wh_ratio=ratio
        )[0]
        return text, float(confidence)
