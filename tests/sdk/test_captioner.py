"""Captioner end to end on the tiny bundle, whose captions are known (see conftest.py)."""

from __future__ import annotations

import dataclasses
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest

from gamelab_caption import BundleError, Captioner, CaptionResult, ImageError
from gamelab_caption.captioner import DecodeOptions, check_onnxruntime_version


def test_caption_names_the_colour(captioner, image_files):
    assert captioner.caption(image_files["red"]).text == "red ball"
    assert captioner.caption(image_files["blue"]).text == "blue box"


def test_result_fields_have_the_documented_types(captioner, image_files):
    result = captioner.caption(image_files["green"])
    assert isinstance(result, CaptionResult)
    assert result.tokens == tuple(result.text.split()) == ("a", "ball")
    assert isinstance(result.score, float) and math.isfinite(result.score)
    assert result.attention is None and result.error is None
    assert all(
        isinstance(text, str) and isinstance(score, float) for text, score in result.alternatives
    )
    scores = [result.score, *(score for _, score in result.alternatives)]
    assert scores == sorted(scores, reverse=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.text = "edited"


def test_beam_search_escapes_the_greedy_trap(captioner, image_files):
    greedy = captioner.caption(image_files["green"], beam_size=1)
    beam = captioner.caption(image_files["green"], beam_size=3)
    assert greedy.text == "green box"  # p = 0.5 * 0.35 * 0.9
    assert beam.text == "a ball"  # p = 0.4 * 0.9 * 0.9
    assert greedy.score == pytest.approx(math.log(0.5 * 0.35 * 0.9), abs=0.01)
    assert beam.score == pytest.approx(math.log(0.4 * 0.9 * 0.9), abs=0.01)
    assert ("green box", pytest.approx(greedy.score)) in beam.alternatives


def test_max_length_limits_the_words(captioner, image_files):
    assert captioner.caption(image_files["green"], max_length=1).text == "green"


@pytest.mark.parametrize("max_length", [0, -1, 1001])
def test_max_length_out_of_range_is_refused_naming_the_value(captioner, image_files, max_length):
    message = f"max_length must be 1..1000, got {max_length}$"
    with pytest.raises(ValueError, match=message):
        captioner.caption(image_files["red"], max_length=max_length)
    with pytest.raises(ValueError, match=message):
        captioner.caption_batch([image_files["red"]], max_length=max_length)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"beam_size": 0}, "beam_size must be >= 1, got 0"),
        ({"max_length": 0}, "max_length must be 1..1000, got 0"),
        ({"max_length": 10**9}, "max_length must be 1..1000, got 1000000000"),
        ({"length_penalty": float("nan")}, "length_penalty must be a finite number, got nan"),
        ({"repeat_penalty": -1.0}, "repeat_penalty must be a finite number >= 0, got -1.0"),
        ({"repeat_penalty": float("inf")}, "repeat_penalty must be a finite number >= 0, got inf"),
    ],
)
def test_bad_decode_options_are_refused_even_for_no_images(captioner, options, message):
    with pytest.raises(ValueError, match=message):
        captioner.caption_batch([], **options)
    with pytest.raises(ValueError, match=message):
        DecodeOptions(**options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"beam_size": "3"}, "beam_size must be an int, got str"),
        ({"beam_size": 2.0}, "beam_size must be an int, got float"),
        ({"beam_size": True}, "beam_size must be an int, got bool"),
        ({"max_length": 7.5}, "max_length must be an int, got float"),
        ({"length_penalty": "0.5"}, "length_penalty must be a number, got str"),
        ({"length_penalty": [1]}, "length_penalty must be a number, got list"),
    ],
)
def test_decode_options_of_the_wrong_type_are_named(captioner, options, message):
    with pytest.raises(TypeError, match=message):
        DecodeOptions(**options)
    DecodeOptions(beam_size=np.int64(2), max_length=np.int32(5), length_penalty=np.float32(0.5))


def test_decode_options_fill_only_their_unset_values_from_the_bundle(captioner):
    bundle = captioner.bundle  # max_length 5, length_penalty 0.0, no repeat penalty
    options = DecodeOptions(beam_size=2).with_defaults(bundle)
    assert options == DecodeOptions(
        beam_size=2, max_length=5, length_penalty=0.0, repeat_penalty=0.0
    )
    chosen = DecodeOptions(
        max_length=3, length_penalty=0.5, return_attention=True, repeat_penalty=1.0
    )
    assert chosen.with_defaults(bundle) == chosen
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.beam_size = 1


def test_attention_has_one_grid_per_step_summing_to_one(captioner, image_files):
    result = captioner.caption(image_files["red"], return_attention=True)
    steps = len(result.tokens) + 1  # the step that chose <end> included
    assert result.attention.shape == (steps, 2, 2)
    assert result.attention.dtype == np.float32
    np.testing.assert_allclose(result.attention.sum(axis=(1, 2)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(result.attention, 0.25, rtol=1e-6)  # a solid image: uniform


def test_array_input_gives_the_same_caption(captioner, image_files):
    red = np.zeros((16, 16, 3), dtype=np.uint8)
    red[..., 0] = 255
    assert captioner.caption(red) == captioner.caption(image_files["red"])


def test_encode_returns_features_per_location_and_unit_embeddings(captioner):
    pixels = np.zeros((2, 8, 8, 3), dtype=np.float32)
    pixels[0, :4, :, 0] = 1.0  # top half red
    pixels[1, ..., 2] = 0.5
    features, embedding = captioner.encode(pixels)
    assert features.shape == (2, 4, 3)  # (N, L, D): mean colour of each quadrant
    np.testing.assert_allclose(features[0, :, 0], [1, 1, 0, 0])
    np.testing.assert_allclose(embedding, [[1, 0, 0], [0, 0, 1]], atol=1e-6)


def test_encode_refuses_pixels_of_another_dtype_than_the_bundles(captioner):
    with pytest.raises(ValueError, match="encodes float32 pixels, got uint8.*preprocess"):
        captioner.encode(np.zeros((1, 8, 8, 3), dtype=np.uint8))


def test_batch_equals_one_image_at_a_time(captioner, image_files):
    images = [image_files[name] for name in ("red", "green", "blue", "green")]
    for beam_size in (1, 3):
        batch = captioner.caption_batch(images, beam_size=beam_size)
        assert batch == [captioner.caption(image, beam_size=beam_size) for image in images]


def test_batch_reports_a_bad_image_and_captions_the_others(captioner, image_files):
    good, bad, other = image_files["red"], image_files["corrupt"], image_files["blue"]
    results = captioner.caption_batch([good, bad, other])
    assert len(results) == 3
    assert isinstance(results[1].error, ImageError)
    assert str(bad) in str(results[1].error)
    assert (results[1].text, results[1].tokens) == ("", ())
    assert results[0] == captioner.caption(good)
    assert results[2] == captioner.caption(other)


def test_strict_batch_raises_the_first_bad_image(captioner, image_files):
    with pytest.raises(ImageError, match="truncated"):
        captioner.caption_batch([image_files["red"], image_files["corrupt"]], strict=True)


def test_empty_batch_gives_no_results(captioner):
    assert captioner.caption_batch([]) == []


def test_shared_captioner_is_thread_safe(captioner, image_files):
    jobs = [(image_files[name], beam) for name in ("red", "green", "blue") for beam in (1, 3)]
    jobs = jobs * 4
    serial = [captioner.caption(image, beam_size=beam) for image, beam in jobs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        threaded = list(pool.map(lambda job: captioner.caption(job[0], beam_size=job[1]), jobs))
    assert threaded == serial


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(),
    reason="the default prefers CUDA where onnxruntime-gpu is installed",
)
def test_default_provider_is_cpu(captioner):
    assert captioner.providers == ["CPUExecutionProvider"]


def test_one_thread_gives_the_same_captions(tiny_bundle, captioner, image_files):
    single = Captioner(tiny_bundle, threads=1, providers=["CPUExecutionProvider"])
    assert single.caption(image_files["green"]) == captioner.caption(image_files["green"])


def test_zero_threads_raise_value_error(tiny_bundle):
    with pytest.raises(ValueError, match="threads"):
        Captioner(tiny_bundle, threads=0)


def test_unknown_provider_raises_value_error_listing_available(tiny_bundle):
    with pytest.raises(ValueError, match="NoSuchExecutionProvider.*CPUExecutionProvider"):
        Captioner(tiny_bundle, providers=["NoSuchExecutionProvider"])


def test_batch_larger_than_one_chunk_keeps_order_and_errors(captioner, image_files):
    from gamelab_caption.captioner import BATCH_SIZE

    colours = ["red", "blue", "green"]
    images = [image_files[colours[i % 3]] for i in range(BATCH_SIZE + 5)]
    images[BATCH_SIZE + 1] = image_files["corrupt"]
    results = captioner.caption_batch(images, beam_size=1)
    assert len(results) == BATCH_SIZE + 5
    assert results[BATCH_SIZE + 1].error is not None
    expected = {c: captioner.caption(image_files[c], beam_size=1).text for c in colours}
    for i, result in enumerate(results):
        if i != BATCH_SIZE + 1:
            assert result.text == expected[colours[i % 3]]


def test_length_penalty_divides_the_score_by_length(captioner, image_files):
    raw = captioner.caption(image_files["red"], length_penalty=0.0)
    per_token = captioner.caption(image_files["red"], length_penalty=1.0)
    assert raw.text == per_token.text == "red ball"
    assert per_token.score == pytest.approx(raw.score / (len(raw.tokens) + 1))  # + <end>


@pytest.mark.parametrize("version", ["1.17.3", "1.9.0", "0.99"])
def test_an_onnxruntime_too_old_for_the_bundles_is_named(version):
    with pytest.raises(BundleError, match=f"onnxruntime {version} is too old.*>=1.18"):
        check_onnxruntime_version(version)


@pytest.mark.parametrize("version", ["1.18.0", "1.20.1+cu121", "1.32.0", "2.0.0.dev1"])
def test_a_recent_onnxruntime_is_accepted(version):
    check_onnxruntime_version(version)
