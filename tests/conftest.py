"""Shared fixtures: a tiny but real model bundle whose captions are known in advance.

The tiny model follows the graph contract in ``gamelab_caption/captioner.py``:

- encoder: 8x8 image -> mean RGB of each 2x2-grid quadrant as ``features`` (N, 4, 3);
  ``embedding`` is the mean colour (N, 3). Pixels are scaled to 0..1 by the manifest.
- decoder_init: ``memory`` = ``keys`` = features; ``hidden`` = mean colour (N, 3).
- decoder_step: log_probs = LogSoftmax(BASE[token] + hidden @ COLOUR[token]); the colour
  term is non-zero only after ``<start>``, so the colour picks the first word and fixed
  word-to-word rows pick the rest. ``attention`` = Softmax((memory + keys) @ hidden).

Known captions: a red image -> "red ball", a blue image -> "blue box". A green image is the
greedy trap: after ``<start>`` "green" has p=0.5 but weak continuations (best "green box",
p=0.16), "a" has p=0.4 and a strong one ("a ball", p=0.32), so greedy says "green box" and
beam 3 says "a ball".
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image, ImageDraw, ImageFont

from gamelab_caption import Captioner
from gamelab_caption.bundle import write_manifest
from gamelab_caption.preprocessing import ImageSpec
from gamelab_caption.vocabulary import END, PAD, SPECIAL_TOKENS, START, UNK, Vocabulary

WORDS = ("a", "red", "blue", "green", "ball", "box", "on", "grass")
TOKENS = SPECIAL_TOKENS + WORDS
GRID = (2, 2)
IMAGE_SIZE = (8, 8)
OPSET = 17
IR_VERSION = 9  # onnx writes a newer IR than some onnxruntime releases read
_FLOOR = 1e-4  # probability of every word a row does not name
_SPECIAL_FLOOR = 1e-9  # <pad>, <start>, <unk>: never worth decoding, so alternatives stay words
_NEVER_IDS = [TOKENS.index(token) for token in (PAD, START, UNK)]
# Next-token probabilities after each previous token (each row sums to 1 before the floors);
# rows not listed end the caption.
_NEXT = {
    "red": {"ball": 0.9, "on": 0.1},
    "blue": {"box": 0.9, "on": 0.1},
    "green": {"box": 0.35, END: 0.25, "on": 0.2, "grass": 0.2},
    "a": {"ball": 0.9, END: 0.05, "box": 0.05},
    "ball": {END: 0.9, "on": 0.1},
    "box": {END: 0.9, "on": 0.1},
    "on": {"grass": 0.9, "a": 0.1},
    "grass": {END: 0.95, "on": 0.05},
}
_GREEN_FIRST = {"green": 0.5, "a": 0.4, "ball": 0.05, "box": 0.05}  # after <start>: the trap
COLOURS = {"red": (255, 0, 0), "blue": (0, 0, 255), "green": (0, 255, 0)}


def _log_row(probs: dict[str, float]) -> np.ndarray:
    row = np.full(len(TOKENS), _FLOOR)
    row[_NEVER_IDS] = _SPECIAL_FLOOR
    for word, p in probs.items():
        row[TOKENS.index(word)] = p
    return np.log(row / row.sum())


def _tables() -> tuple[np.ndarray, np.ndarray]:
    """BASE (V, V) logits by previous token; COLOUR (V, 3, V) weights of the hidden colour."""
    vocab = len(TOKENS)
    base = np.stack([_log_row(_NEXT.get(word, {END: 1.0})) for word in TOKENS])
    start = TOKENS.index(START)
    base[start] = 0.0  # after <start> the colour alone decides which word comes first...
    base[start, _NEVER_IDS + [TOKENS.index(END)]] = np.log(_SPECIAL_FLOOR)  # ...among words
    colour = np.zeros((vocab, 3, vocab))
    colour[start, 0, TOKENS.index("red")] = 6.0  # p(red | red image) ~ 0.98
    colour[start, 2, TOKENS.index("blue")] = 6.0
    colour[start, 1] = _log_row(_GREEN_FIRST)  # green image: exactly the trap row
    return base.astype(np.float32), colour.astype(np.float32)


def _save(nodes, name, inputs, outputs, initializers, path: Path) -> None:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _shape(name: str, values) -> TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def _float(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _build_encoder(path: Path) -> None:
    height, width = IMAGE_SIZE
    pool = (height // GRID[0], width // GRID[1])
    locations = GRID[0] * GRID[1]
    nodes = [
        helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),  # (N, 3, H, W)
        helper.make_node(
            "AveragePool", ["nchw"], ["pooled"], kernel_shape=pool, strides=pool
        ),  # (N, 3, 2, 2)
        helper.make_node("Reshape", ["pooled", "channels_by_location"], ["flat"]),  # (N, 3, L)
        helper.make_node("Transpose", ["flat"], ["features"], perm=[0, 2, 1]),  # (N, L, 3)
        helper.make_node("ReduceMean", ["features"], ["embedding"], axes=[1], keepdims=0),  # (N, 3)
    ]
    _save(
        nodes,
        "tiny_encoder",
        [_float("image", ["N", height, width, 3])],
        [_float("features", ["N", locations, 3]), _float("embedding", ["N", 3])],
        [_shape("channels_by_location", [0, 3, locations])],
        path,
    )


def _build_decoder_init(path: Path) -> None:
    locations = GRID[0] * GRID[1]
    nodes = [
        helper.make_node("Identity", ["features"], ["memory"]),  # (N, L, 3)
        helper.make_node("Identity", ["features"], ["keys"]),  # (N, L, 3)
        helper.make_node("ReduceMean", ["features"], ["hidden"], axes=[1], keepdims=0),  # (N, 3)
    ]
    _save(
        nodes,
        "tiny_decoder_init",
        [_float("features", ["N", locations, 3])],
        [
            _float("memory", ["N", locations, 3]),
            _float("keys", ["N", locations, 3]),
            _float("hidden", ["N", 3]),
        ],
        [],
        path,
    )


def _build_decoder_step(path: Path) -> None:
    base, colour = _tables()
    vocab, locations = len(TOKENS), GRID[0] * GRID[1]
    nodes = [
        helper.make_node("Gather", ["base", "token"], ["token_logits"]),  # (R, V)
        helper.make_node("Gather", ["colour", "token"], ["token_colour"]),  # (R, 3, V)
        helper.make_node("Reshape", ["hidden", "row_shape"], ["hidden_row"]),  # (R, 1, 3)
        helper.make_node("MatMul", ["hidden_row", "token_colour"], ["colour_3d"]),  # (R, 1, V)
        helper.make_node("Reshape", ["colour_3d", "vocab_shape"], ["colour_logits"]),  # (R, V)
        helper.make_node("Add", ["token_logits", "colour_logits"], ["logits"]),  # (R, V)
        helper.make_node("LogSoftmax", ["logits"], ["log_probs"], axis=-1),  # (R, V)
        helper.make_node("Add", ["memory", "keys"], ["context"]),  # (R, L, 3)
        helper.make_node("Reshape", ["hidden", "column_shape"], ["hidden_column"]),  # (R, 3, 1)
        helper.make_node("MatMul", ["context", "hidden_column"], ["scores_3d"]),  # (R, L, 1)
        helper.make_node("Reshape", ["scores_3d", "location_shape"], ["scores"]),  # (R, L)
        helper.make_node("Softmax", ["scores"], ["attention"], axis=-1),  # (R, L)
        helper.make_node("Identity", ["hidden"], ["next_hidden"]),  # (R, 3)
    ]
    _save(
        nodes,
        "tiny_decoder_step",
        [
            helper.make_tensor_value_info("token", TensorProto.INT64, ["R"]),
            _float("hidden", ["R", 3]),
            _float("memory", ["R", locations, 3]),
            _float("keys", ["R", locations, 3]),
        ],
        [
            _float("log_probs", ["R", vocab]),
            _float("next_hidden", ["R", 3]),
            _float("attention", ["R", locations]),
        ],
        [
            numpy_helper.from_array(base, "base"),
            numpy_helper.from_array(colour, "colour"),
            _shape("row_shape", [-1, 1, 3]),
            _shape("vocab_shape", [-1, vocab]),
            _shape("column_shape", [-1, 3, 1]),
            _shape("location_shape", [-1, locations]),
        ],
        path,
    )


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A real bundle folder (manifest, three ONNX graphs, vocabulary) for the tiny model."""
    folder = tmp_path_factory.mktemp("tiny_bundle")
    _build_encoder(folder / "encoder.onnx")
    _build_decoder_init(folder / "decoder_init.onnx")
    _build_decoder_step(folder / "decoder_step.onnx")
    Vocabulary(WORDS).save(folder / "vocab.json")
    spec = ImageSpec(
        size=IMAGE_SIZE, resize="bilinear", mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0)
    )
    write_manifest(
        folder,
        {
            "name": "tiny",
            "encoder": {"name": "tiny-average-pool", "grid": list(GRID), "image": spec.to_dict()},
            "graphs": {
                "encoder": "encoder.onnx",
                "decoder_init": "decoder_init.onnx",
                "decoder_step": "decoder_step.onnx",
            },
            "vocabulary": "vocab.json",
            "decoding": {"max_length": 5, "length_penalty": 0.0},
        },
    )
    return folder


@pytest.fixture(scope="session")
def captioner(tiny_bundle) -> Captioner:
    """One Captioner for the whole run: sessions are slow to create."""
    return Captioner(tiny_bundle)


@pytest.fixture(scope="session")
def image_files(tmp_path_factory) -> dict[str, Path]:
    """Solid red, blue and green PNGs, plus "corrupt": a JPEG cut in half."""
    folder = tmp_path_factory.mktemp("images")
    files = {}
    for name, rgb in COLOURS.items():
        files[name] = folder / f"{name}.png"
        Image.new("RGB", (16, 16), rgb).save(files[name])
    jpeg = folder / "full.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(jpeg, quality=95)
    files["corrupt"] = folder / "corrupt.jpg"
    data = jpeg.read_bytes()
    files["corrupt"].write_bytes(data[: len(data) // 2])
    return files


@pytest.fixture(scope="session")
def large_jpeg() -> bytes:
    """An 1800 x 1400 JPEG with detail at every scale: large enough to decode reduced."""
    y, x = np.mgrid[0:1400, 0:1800]
    photo = np.stack([x % 256, y % 256, (x // 7 + y // 5) % 256], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def game_index(tmp_path_factory, captioner):
    """A three-game catalogue (CSV) of solid red, blue and green covers, indexed with the
    tiny model: a red photo finds "Red Game" first."""
    from gamelab_caption.search import GameIndex

    folder = tmp_path_factory.mktemp("catalogue")
    rows = ["id,name,image,platform"]
    for colour in ("red", "blue", "green"):
        Image.new("RGB", (64, 64), COLOURS[colour]).save(folder / f"{colour}.png")
        rows.append(f"{colour}-game,{colour.title()} Game,{colour}.png,snes")
    (folder / "games.csv").write_text("\n".join(rows) + "\n")
    return GameIndex.build(folder / "games.csv", captioner=captioner, progress=False)


SCREEN = (320, 224)  # a Master System / Mega Drive title screen
_SYSTEM_FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf",
)


def _scalable_font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's own scalable font (Pillow >= 10.1 with FreeType), else DejaVu, else skip."""
    try:
        font = ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1, or built without FreeType
        font = None
    if isinstance(font, ImageFont.FreeTypeFont):
        return font
    for path in _SYSTEM_FONTS:
        if Path(path).is_file():
            return ImageFont.truetype(path, size)
    pytest.skip("no TrueType font: Pillow < 10.1 or without FreeType, and no DejaVu")


@pytest.fixture(scope="session")
def draw_screen():
    """``draw_screen(lines, background)``: a 320x224 title screen as a PIL image, each
    ``(text, font size, centre y[, colour])`` drawn centred (yellow unless given)."""

    def draw(lines, background=(12, 16, 48)) -> Image.Image:
        screen = Image.new("RGB", SCREEN, background)
        canvas = ImageDraw.Draw(screen)
        for text, size, y, *colour in lines:
            fill = colour[0] if colour else (255, 220, 40)
            canvas.text(
                (SCREEN[0] // 2, y), text, font=_scalable_font(size), fill=fill, anchor="mm"
            )
        return screen

    return draw


@pytest.fixture(scope="session")
def draw_banded_title(draw_screen):
    """``draw_banded_title(title)``: a title on black, its letters in horizontal bands of dark
    red and dark blue, as 8-bit logos are shaded: PP-OCR reads nothing in it as it is."""

    def draw(title: str, colours=((200, 0, 0), (0, 0, 60)), period: int = 2) -> Image.Image:
        screen = draw_screen([(title, 40, 90, "white")], background=(0, 0, 0))
        letters = np.asarray(screen.convert("L"))[..., None] > 127  # (H, W, 1)
        rows = np.arange(screen.height) // period % len(colours)  # (H,)
        bands = np.asarray(colours, np.uint8)[rows][:, None, :]  # (H, 1, 3)
        return Image.fromarray(np.where(letters, bands, 0).astype(np.uint8))

    return draw


@pytest.fixture(scope="session")
def draw_striped_title(draw_screen):
    """``draw_striped_title(title)``: a title on black, its letters cut in vertical stripes
    of yellow and black two pixels wide, as dithered 8-bit logos are: PP-OCR's detector finds
    no text in it, in its plain or brightest-channel view."""

    def draw(title: str, period: int = 2) -> Image.Image:
        screen = draw_screen([(title, 40, 90, "white")], background=(0, 0, 0))
        letters = np.asarray(screen.convert("L")) > 127  # (H, W)
        lit = np.arange(screen.width) // period % 2 == 0  # (W,)
        shown = letters & lit[None, :]
        return Image.fromarray(np.where(shown[..., None], (220, 220, 0), 0).astype(np.uint8))

    return draw


# Files that take minutes (training and exporting models): first, so that with ``-n auto
# --dist loadfile`` they run beside the rest of the suite rather than after it.
SLOWEST_FILES = ("test_pipeline.py", "test_scst.py", "test_distill.py", "test_export_cli.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return SLOWEST_FILES.index(name) if name in SLOWEST_FILES else len(SLOWEST_FILES)

    items.sort(key=rank)  # stable: the order within a rank is kept
