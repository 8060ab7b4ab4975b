"""Image loading and normalisation: every input kind, every Pillow mode, every bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from gamelab_caption import ImageError
from gamelab_caption.preprocessing import ImageSpec, load_image, preprocess, to_pixels

SPEC = ImageSpec(size=(6, 4), resize="bilinear", mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 8.0))
WHITE, RED, BLUE = (255, 255, 255), (255, 0, 0), (0, 0, 255)
_EXIF_ORIENTATION = 0x0112


def _gradient(width: int = 10, height: int = 8) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 25, y * 30, (x + y) * 10], axis=-1).astype(np.uint8)  # (H, W, 3)


def _pixels(image: Image.Image) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in p) for p in np.asarray(image).reshape(-1, 3)]


def _png_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return buffer.getvalue()


@pytest.fixture
def gradient_png(tmp_path):
    path = tmp_path / "gradient.png"
    Image.fromarray(_gradient()).save(path)
    return path


def test_every_input_kind_gives_identical_pixels(gradient_png):
    data = gradient_png.read_bytes()
    with open(gradient_png, "rb") as stream:
        from_stream = preprocess(stream, SPEC)
    inputs = [
        str(gradient_png),
        gradient_png,
        data,
        io.BytesIO(data),
        Image.open(gradient_png),
        _gradient(),
    ]
    for source in inputs:
        np.testing.assert_array_equal(preprocess(source, SPEC), from_stream)


@pytest.mark.parametrize(
    "spec",
    [SPEC, ImageSpec(size=(6, 4), mean=(127.0,) * 3, std=(128.0,) * 3)],
    ids=["per-channel", "same-for-all-channels"],
)
def test_output_is_float32_of_spec_size_normalised_by_mean_and_std(gradient_png, spec):
    # Exactly the floats of computing (value - mean) / std per pixel: training's features
    # were computed that way, and to_pixels now looks the values up in a table.
    pixels = preprocess(gradient_png, spec)
    assert pixels.dtype == np.float32
    assert pixels.shape == (6, 4, 3)  # (H, W, 3) from spec.size = (height, width)
    resized = Image.open(gradient_png).convert("RGB").resize((4, 6), Image.Resampling.BILINEAR)
    expected = (np.asarray(resized, dtype=np.float32) - np.float32(spec.mean)) / np.float32(
        spec.std
    )
    np.testing.assert_array_equal(pixels, expected)


def test_resize_method_must_be_known():
    with pytest.raises(ValueError, match="bilinear"):
        ImageSpec(size=(4, 4), resize="cubic")


def test_image_spec_round_trips_through_dict():
    assert ImageSpec.from_dict(SPEC.to_dict()) == SPEC
    as_bytes = ImageSpec(size=(6, 4), mean=(127.0,) * 3, std=(128.0,) * 3, dtype="uint8")
    assert ImageSpec.from_dict(as_bytes.to_dict()) == as_bytes


def test_a_manifest_without_pixel_dtype_means_normalised_floats():
    # bundles written before encoders could take bytes
    spec = {"size": [6, 4], "resize": "bilinear", "mean": [127] * 3, "std": [128] * 3}
    assert ImageSpec.from_dict(spec).dtype == "float32"


def test_pixel_dtype_must_be_known():
    with pytest.raises(ValueError, match="float32, uint8"):
        ImageSpec(size=(4, 4), dtype="float16")


def test_a_uint8_spec_gives_the_resized_bytes_that_the_float_spec_normalises(gradient_png):
    floats = ImageSpec(size=(6, 4), mean=(127.0,) * 3, std=(128.0,) * 3)
    as_bytes = ImageSpec(size=(6, 4), mean=(127.0,) * 3, std=(128.0,) * 3, dtype="uint8")
    pixels = preprocess(gradient_png, as_bytes)
    assert pixels.dtype == np.uint8 and pixels.shape == (6, 4, 3)
    expected = (pixels.astype(np.float32) - np.float32(127)) / np.float32(128)
    np.testing.assert_array_equal(preprocess(gradient_png, floats), expected)


def test_rgba_is_composited_on_white():
    image = Image.new("RGBA", (3, 1))
    image.putdata([(255, 0, 0, 0), (0, 0, 255, 255), (0, 0, 0, 128)])
    red_invisible, blue, half_black = _pixels(load_image(_png_bytes(image)))
    assert red_invisible == WHITE
    assert blue == BLUE
    assert all(abs(v - 127) <= 1 for v in half_black)


def test_la_is_composited_on_white():
    image = Image.new("LA", (2, 1))
    image.putdata([(0, 0), (0, 255)])
    assert _pixels(load_image(image)) == [WHITE, (0, 0, 0)]


def test_palette_transparency_is_composited_on_white():
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 255, 0, 0])
    image.putdata([0, 1])
    reloaded = Image.open(io.BytesIO(_png_bytes(image, transparency=0)))
    assert reloaded.mode == "P" and "transparency" in reloaded.info
    assert _pixels(load_image(reloaded)) == [WHITE, RED]


def test_palette_without_transparency_keeps_colours():
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 255, 255, 0, 0])
    image.putdata([0, 1])
    assert _pixels(load_image(image)) == [BLUE, RED]


def test_cmyk_greyscale_and_bilevel_become_rgb():
    assert _pixels(load_image(Image.new("CMYK", (1, 1), (0, 255, 255, 0)))) == [RED]
    assert _pixels(load_image(Image.new("L", (1, 1), 100))) == [(100, 100, 100)]
    bilevel = Image.new("1", (2, 1))
    bilevel.putpixel((1, 0), 1)
    assert _pixels(load_image(bilevel)) == [(0, 0, 0), WHITE]


def test_sixteen_bit_greyscale_uses_full_range():
    values = np.linspace(1000, 3000, 16, dtype=np.uint16).reshape(4, 4)  # far below 65535
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    grey = np.asarray(load_image(image))[..., 0]
    assert grey.min() == 0 and grey.max() == 255
    assert np.all(np.diff(grey.reshape(-1).astype(int)) >= 0)  # order kept


def test_exif_orientation_is_applied(tmp_path):
    stored = Image.new("RGB", (32, 16), RED)  # wide: red left half, blue right half
    stored.paste(BLUE, (16, 0, 32, 16))
    exif = Image.Exif()
    exif[_EXIF_ORIENTATION] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.jpg"
    stored.save(path, quality=95, exif=exif)
    upright = np.asarray(load_image(path)).astype(int)
    assert upright.shape == (32, 16, 3)  # tall now
    top, bottom = upright[8, 8], upright[24, 8]
    assert top[0] > 200 and top[2] < 60  # the left (red) half went to the top
    assert bottom[2] > 200 and bottom[0] < 60


def test_animated_gif_gives_first_frame(tmp_path):
    path = tmp_path / "animated.gif"
    frames = [Image.new("RGB", (4, 4), colour) for colour in (RED, BLUE, WHITE)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(path).n_frames == 3
    assert set(_pixels(load_image(path))) == {RED}


def test_image_error_is_a_value_error():
    assert issubclass(ImageError, ValueError)
    with pytest.raises(ValueError):
        load_image(b"not an image")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (b"this is plain text, not an image", r"Cannot read <32 bytes> as an image"),
        (bytearray(b"an upload, not an image"), r"Cannot read <23 bytes> as an image"),
        (b"", "empty"),
        (np.zeros((4, 4, 3), dtype=np.float32), "uint8"),
        (np.zeros((4, 4), dtype=np.uint8), r"HxWx3.*\(4, 4\)"),
        (np.zeros((4, 4, 4), dtype=np.uint8), r"HxWx3.*\(4, 4, 4\)"),
        (np.zeros((0, 4, 3), dtype=np.uint8), "HxWx3"),
        (42, "Unsupported image input type int"),
    ],
    ids=[
        "text-bytes",
        "text-bytearray",
        "empty-bytes",
        "float-array",
        "2d-array",
        "rgba-array",
        "empty-array",
        "int",
    ],
)
def test_unusable_input_raises_image_error(source, message):
    with pytest.raises(ImageError, match=message):
        load_image(source)


def test_missing_file_error_names_the_path(tmp_path):
    path = tmp_path / "nowhere.jpg"
    with pytest.raises(ImageError, match="not found") as error:
        load_image(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    ("source", "hint"),
    [
        ("https://example.com/cat.jpg", "a URL: nothing is downloaded here"),
        ("~/no-such-photo.jpg", "~ is not expanded"),
        ("C:/no-such-photo.jpg", None),  # a Windows drive, not a URL
    ],
)
def test_a_missing_file_that_looks_like_a_url_or_home_path_says_so(source, hint):
    with pytest.raises(ImageError, match="Image file not found") as error:
        load_image(source)
    if hint is None:
        assert "(" not in str(error.value)
    else:
        assert hint in str(error.value)


def test_a_folder_is_named_as_a_folder_not_a_missing_file(tmp_path):
    with pytest.raises(ImageError, match="is a folder, not an image file") as error:
        load_image(tmp_path)
    assert str(tmp_path) in str(error.value)


def test_truncated_jpeg_error_names_the_path(image_files):
    with pytest.raises(ImageError, match="truncated") as error:
        load_image(image_files["corrupt"])
    assert str(image_files["corrupt"]) in str(error.value)


def test_text_file_error_names_the_path(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not a jpeg")
    with pytest.raises(ImageError, match="Cannot read") as error:
        load_image(str(path))
    assert str(path) in str(error.value)


def test_too_many_pixels_is_refused_before_decoding(gradient_png):
    with pytest.raises(ImageError, match="more than the limit of 79") as error:
        load_image(gradient_png, max_pixels=79)  # the image has 10 x 8 = 80
    assert str(gradient_png) in str(error.value)
    assert load_image(gradient_png, max_pixels=80).size == (10, 8)


def test_to_pixels_accepts_a_loaded_image(gradient_png):
    image = load_image(gradient_png)
    np.testing.assert_array_equal(to_pixels(image, SPEC), preprocess(gradient_png, SPEC))


def test_refusals_have_typed_subclasses(gradient_png):
    from gamelab_caption import ImageTooLarge, NotAnImage

    with pytest.raises(NotAnImage) as refused:
        load_image(b"this is plain text, not an image")
    message = str(refused.value)  # names the input, not a Python object's address
    assert message == "Cannot read <32 bytes> as an image: it is not an image format Pillow knows"
    with pytest.raises(ImageTooLarge):
        load_image(gradient_png, max_pixels=10)


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_no_smaller_than_asked(large_jpeg):
    data = large_jpeg  # 1800 x 1400
    assert load_image(data).size == (1800, 1400)
    assert load_image(data, min_side=448).size == (900, 700)  # 1/2: 1/4 would be < 448
    assert load_image(data, min_side=200).size == (450, 350)  # 1/4
    assert load_image(data, min_side=1000).size == (1800, 1400)  # no scale keeps 1000


def test_preprocess_of_a_large_jpeg_matches_the_full_decode_closely(large_jpeg):
    # The caption path decodes large JPEGs at a reduced scale; the encoder's pixels differ
    # from a full decode only by the scaled DCT's rounding (measured: 0.1% of the range).
    data = large_jpeg
    spec = ImageSpec(size=(224, 224), mean=(127.0,) * 3, std=(128.0,) * 3)
    full = to_pixels(load_image(data), spec)
    reduced = preprocess(data, spec)
    assert reduced.shape == full.shape == (224, 224, 3)
    np.testing.assert_array_equal(reduced, to_pixels(load_image(data, min_side=448), spec))
    assert not np.array_equal(reduced, full)
    assert np.abs(reduced - full).mean() < 0.01  # pixels span [-1, 1]


def test_reduced_decoding_still_refuses_too_many_pixels_by_the_full_size(large_jpeg):
    with pytest.raises(ImageError, match="1800x1400"):
        load_image(large_jpeg, max_pixels=1_000_000, min_side=448)


def test_reduced_decoding_leaves_other_formats_and_loaded_images_alone(gradient_png, large_jpeg):
    assert load_image(gradient_png, min_side=2).size == (10, 8)
    decoded = load_image(large_jpeg)
    assert load_image(decoded, min_side=448).size == (1800, 1400)
