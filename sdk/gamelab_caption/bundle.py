"""The model bundle: the contract between the export toolchain and the runtime.

A bundle is a folder holding ``manifest.json``, three ONNX graphs and a vocabulary file.
The manifest says how to preprocess images, which graph does what, how to decode, where
the weights came from, how well the model scored, and the sha256 of every file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .beam_search import check_repeat_penalty
from .errors import BundleError
from .preprocessing import ImageSpec
from .vocabulary import REPEATABLE_WORDS, Vocabulary

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# The graphs of a bundle: the keys of the manifest's "graphs", the SDK's session names, and
# (as "<name>.onnx") the export toolchain's file names. Their contract: captioner.py.
ENCODER = "encoder"
DECODER_INIT = "decoder_init"
DECODER_STEP = "decoder_step"
GRAPHS = (ENCODER, DECODER_INIT, DECODER_STEP)
# An encoder graph with an ImageNet head outputs its class probabilities under this name;
# the manifest says so with encoder.classes = CLASSES (see animals.py).
CLASSES_OUTPUT = "classes"
CLASSES = {"labels": "imagenet-1k", "output": CLASSES_OUTPUT}
DEFAULT_MODEL = "efficientnet-lite0"
_REQUIRED_KEYS = ("format_version", "name", "encoder", "graphs", "vocabulary", "decoding", "files")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundled_models() -> list[str]:
    """Names of the bundles shipped inside the package."""
    root = resources.files("gamelab_caption") / "models"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / MANIFEST).is_file())


def _locate(model: str | os.PathLike) -> Path:
    if isinstance(model, str) and model in bundled_models():
        return Path(str(resources.files("gamelab_caption") / "models" / model))
    path = Path(model)
    if path.is_dir():
        return path
    raise BundleError(
        f"Unknown model {os.fspath(model)!r}: not a bundled model "
        f"(available: {', '.join(bundled_models()) or 'none'}) and not a bundle folder"
    )


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk.

    Attributes:
        path: the bundle folder.
        manifest: the parsed manifest.json.
        image_spec: preprocessing parameters of the encoder.
        vocabulary: the decoder's words.
    """

    path: Path
    manifest: dict
    image_spec: ImageSpec
    vocabulary: Vocabulary

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.manifest["encoder"]["grid"])

    @property
    def max_length(self) -> int:
        return int(self.manifest["decoding"]["max_length"])

    @property
    def length_penalty(self) -> float:
        return float(self.manifest["decoding"].get("length_penalty", 0.0))

    @property
    def repeat_penalty(self) -> float:
        """Log-prob taken off a word a caption already has (0 in bundles made before it)."""
        return float(self.manifest["decoding"].get("repeat_penalty", 0.0))

    @functools.cached_property
    def repeatable_ids(self) -> frozenset[int]:
        """Ids of the words a caption may repeat freely ("a", "in"): the manifest's
        ``decoding.repeatable_words``, else ``REPEATABLE_WORDS``; words the vocabulary lacks
        are ignored."""
        words = self.manifest["decoding"].get("repeatable_words", REPEATABLE_WORDS)
        return self.vocabulary.known_ids(words)

    @property
    def animal_threshold(self) -> float | None:
        """The probability an animal kind needs from the encoder's ImageNet head before the
        caption's animal words are renamed to it (``animals.name_animal``); None when the
        encoder has no head (``encoder.classes``) or the manifest no ``animal_threshold``."""
        threshold = self.manifest["decoding"].get("animal_threshold")
        if threshold is None or "classes" not in self.manifest["encoder"]:
            return None
        return float(threshold)

    @property
    def encoder_id(self) -> str:
        """The sha256 that names what the encoder computes: its graph's, or that of an earlier
        graph it reproduces bit for bit (``encoder.same_outputs_as``: the same graph taking
        uint8 pixels), so that game indexes and batch outputs built with either still fit."""
        encoder = self.manifest["encoder"]
        return (
            encoder.get("same_outputs_as")
            or self.manifest["files"][self.manifest["graphs"][ENCODER]]
        )

    def graph_path(self, graph: str) -> Path:
        return self.path / self.manifest["graphs"][graph]


def load_bundle(model: str | os.PathLike = DEFAULT_MODEL, *, verify: bool = True) -> Bundle:
    """Find, read and check a bundle.

    Args:
        model: a bundled model name or a path to a bundle folder.
        verify: check every file's sha256 against the manifest.

    Raises:
        BundleError: the bundle is missing, of another format version, incomplete or corrupt.
    """
    path = _locate(model)
    manifest_path = path / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{manifest_path} is missing: not a model bundle") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"{manifest_path} is not valid JSON: {error}") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path} must hold a JSON object")
    missing = [key for key in _REQUIRED_KEYS if key not in manifest]
    if missing:
        raise BundleError(f"{manifest_path} lacks the keys: {', '.join(missing)}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise BundleError(
            f"{manifest_path} has format_version {manifest['format_version']!r}; "
            f"this SDK reads version {FORMAT_VERSION}"
        )
    absent_graphs = [g for g in GRAPHS if g not in manifest["graphs"]]
    if absent_graphs:
        raise BundleError(f"{manifest_path} names no file for: {', '.join(absent_graphs)}")
    needed = [*manifest["graphs"].values(), manifest["vocabulary"]]
    for name in needed:
        if name not in manifest["files"]:
            raise BundleError(f"{manifest_path} has no checksum for {name}")
    for name, expected in manifest["files"].items():
        file = path / name
        if not file.is_file():
            raise BundleError(f"Bundle file {file} is missing")
        if verify and sha256_file(file) != expected:
            raise BundleError(f"Bundle file {file} is corrupt: sha256 does not match the manifest")
    try:
        vocabulary = Vocabulary.load(path / manifest["vocabulary"])
        image_spec = ImageSpec.from_dict(manifest["encoder"]["image"])
        grid_h, grid_w = (int(n) for n in manifest["encoder"]["grid"])
        int(manifest["decoding"]["max_length"])
        _check_repeats(manifest["decoding"])
        _check_classes(manifest["encoder"], manifest["decoding"])
    except (KeyError, ValueError, TypeError, json.JSONDecodeError) as error:
        raise BundleError(
            f"Bundle {path} has a bad vocabulary, image spec, grid or decoding: {error!r}"
        ) from None
    return Bundle(path=path, manifest=manifest, image_spec=image_spec, vocabulary=vocabulary)


def _check_repeats(decoding: dict) -> None:
    check_repeat_penalty(decoding.get("repeat_penalty", 0.0))
    words = decoding.get("repeatable_words", [])
    if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
        raise ValueError(f"repeatable_words must be a list of words, got {words!r}")


def _check_classes(encoder: dict, decoding: dict) -> None:
    classes = encoder.get("classes")
    if classes is not None and classes != CLASSES:
        raise ValueError(f"encoder.classes must be {CLASSES}, got {classes!r}")
    if (threshold := decoding.get("animal_threshold")) is not None:
        check_animal_threshold(threshold)


def check_animal_threshold(threshold: object) -> None:
    """Raise ValueError unless ``threshold`` is a number in (0, 1] (a probability to reach)."""
    number = isinstance(threshold, (int, float)) and not isinstance(threshold, bool)
    if not (number and 0 < threshold <= 1):
        raise ValueError(f"animal_threshold must be in (0, 1], got {threshold!r}")


def write_manifest(folder: str | Path, manifest: dict) -> Path:
    """Add the format version and the sha256 of every other file in ``folder``, then write."""
    folder = Path(folder)
    files = {
        p.name: sha256_file(p)
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    complete = {"format_version": FORMAT_VERSION, **manifest, "files": files}
    target = folder / MANIFEST
    partial = target.with_suffix(".json.part")
    partial.write_text(json.dumps(complete, indent=2) + "\n")
    partial.replace(target)  # never leave a half-written manifest behind
    return target
