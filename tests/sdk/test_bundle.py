"""Bundle loading: every way a bundle can be broken gives a BundleError naming the file."""

from __future__ import annotations

import json
import shutil

import pytest

from gamelab_caption import BundleError, Captioner, bundled_models, load_bundle
from gamelab_caption.bundle import FORMAT_VERSION, MANIFEST, sha256_file, write_manifest


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    """A private copy of the tiny bundle that a test may break."""
    return shutil.copytree(tiny_bundle, tmp_path / "bundle")


def _edit_manifest(folder, edit) -> None:
    path = folder / MANIFEST
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def _raises_naming(path, match: str, model) -> None:
    with pytest.raises(BundleError, match=match) as error:
        load_bundle(model)
    assert str(path) in str(error.value)


def test_tiny_bundle_loads_with_its_manifest_values(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    assert bundle.name == "tiny"
    assert bundle.grid == (2, 2)
    assert bundle.max_length == 5
    assert bundle.length_penalty == 0.0
    assert bundle.image_spec.size == (8, 8)
    assert bundle.vocabulary.words[4:7] == ("a", "red", "blue")
    assert bundle.graph_path("encoder") == tiny_bundle / "encoder.onnx"


def test_write_manifest_records_format_version_and_every_checksum(tiny_bundle):
    manifest = json.loads((tiny_bundle / MANIFEST).read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert sorted(manifest["files"]) == sorted(
        p.name for p in tiny_bundle.iterdir() if p.name != MANIFEST
    )
    for name, digest in manifest["files"].items():
        assert sha256_file(tiny_bundle / name) == digest


def test_missing_manifest_raises(bundle_copy):
    (bundle_copy / MANIFEST).unlink()
    _raises_naming(bundle_copy / MANIFEST, "is missing: not a model bundle", bundle_copy)


def test_manifest_with_bad_json_raises(bundle_copy):
    (bundle_copy / MANIFEST).write_text('{"name": ')
    _raises_naming(bundle_copy / MANIFEST, "not valid JSON", bundle_copy)


def test_other_format_version_raises(bundle_copy):
    _edit_manifest(bundle_copy, lambda m: m.update(format_version=99))
    _raises_naming(bundle_copy / MANIFEST, "format_version 99", bundle_copy)


def test_manifest_missing_a_key_raises(bundle_copy):
    _edit_manifest(bundle_copy, lambda m: m.pop("decoding"))
    _raises_naming(bundle_copy / MANIFEST, "lacks the keys: decoding", bundle_copy)


def test_manifest_missing_a_graph_raises(bundle_copy):
    _edit_manifest(bundle_copy, lambda m: m["graphs"].pop("decoder_step"))
    _raises_naming(bundle_copy / MANIFEST, "names no file for: decoder_step", bundle_copy)


def test_missing_file_raises(bundle_copy):
    (bundle_copy / "vocab.json").unlink()
    _raises_naming(bundle_copy / "vocab.json", "is missing", bundle_copy)


def test_corrupted_file_fails_its_checksum(bundle_copy):
    path = bundle_copy / "decoder_step.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    _raises_naming(path, "sha256 does not match", bundle_copy)
    assert load_bundle(bundle_copy, verify=False).name == "tiny"


def test_bad_image_spec_raises(bundle_copy):
    _edit_manifest(bundle_copy, lambda m: m["encoder"]["image"].update(resize="cubic"))
    with pytest.raises(BundleError, match="bad vocabulary, image spec"):
        load_bundle(bundle_copy)


def test_manifest_without_grid_raises_bundle_error(bundle_copy):
    _edit_manifest(bundle_copy, lambda m: m["encoder"].pop("grid"))
    with pytest.raises(BundleError, match="grid"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize(
    ("decoding", "message"),
    [
        ({"repeat_penalty": -1}, "repeat_penalty must be a finite number >= 0, got -1.0"),
        ({"repeat_penalty": "high"}, "could not convert string to float"),
        ({"repeatable_words": "a,the"}, "repeatable_words must be a list of words"),
        ({"repeatable_words": ["a", 3]}, "repeatable_words must be a list of words"),
    ],
)
def test_bad_repeat_settings_raise_bundle_error(bundle_copy, decoding, message):
    _edit_manifest(bundle_copy, lambda m: m["decoding"].update(decoding))
    with pytest.raises(
        BundleError, match=f"bad vocabulary, image spec, grid or decoding.*{message}"
    ):
        load_bundle(bundle_copy)


def test_repeatable_words_the_vocabulary_lacks_are_ignored(bundle_copy):
    _edit_manifest(
        bundle_copy,
        lambda m: m["decoding"].update(repeat_penalty=1.5, repeatable_words=["red", "zebra"]),
    )
    bundle = load_bundle(bundle_copy)
    assert bundle.repeat_penalty == 1.5
    assert bundle.repeatable_ids == {bundle.vocabulary.encode("red")[1]}


def test_garbage_onnx_with_valid_checksum_fails_in_captioner(bundle_copy):
    path = bundle_copy / "encoder.onnx"
    path.write_bytes(b"this is not a protobuf")
    write_manifest(bundle_copy, json.loads((bundle_copy / MANIFEST).read_text()))
    load_bundle(bundle_copy)  # the checksums agree: only ONNX Runtime can tell
    with pytest.raises(BundleError, match="ONNX Runtime cannot load") as error:
        Captioner(bundle_copy)
    assert str(path) in str(error.value)


def test_unknown_model_name_lists_bundled_models():
    with pytest.raises(BundleError, match="Unknown model 'no-such-model'.*available: ") as error:
        load_bundle("no-such-model")
    for name in bundled_models():
        assert name in str(error.value)
