"""Captioner: load a bundle's three ONNX graphs once, then caption images with beam search.

Graph contract (names are fixed; shapes: N images, R decoder rows, L = grid_h * grid_w):
    encoder:      image (N, H, W, 3) float32, or uint8 where the manifest's encoder.image.dtype
                  says so (the graph normalises) -> features (N, L, D), embedding (N, D),
                  and where the manifest's encoder.classes says so, classes (N, 1000): the
                  ImageNet probabilities that name animals (animals.py)
    decoder_init: features (N, L, D) -> memory (N, M, E), keys (N, M, A), hidden (N, U)
    decoder_step: token (R,) int64, hidden (R, U), memory (R, M, E), keys (R, M, A)
                  -> log_probs (R, V), next_hidden (R, U), attention (R, L)
M >= L: the decoder may attend to more than the image's locations (a decoder that reads the
ImageNet probabilities has one more slot); its attention output is over the image alone.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from .animals import kind_probabilities, name_animal
from .beam_search import Hypothesis, beam_search, check_repeat_penalty
from .bundle import (
    CLASSES_OUTPUT,
    DECODER_INIT,
    DECODER_STEP,
    DEFAULT_MODEL,
    ENCODER,
    GRAPHS,
    Bundle,
    load_bundle,
)
from .errors import BundleError, ImageError
from .preprocessing import DEFAULT_MAX_PIXELS, ImageInput, preprocess

ENCODER_BATCH = 16  # images per encoder call: bounds peak memory on big batches
BATCH_SIZE = 64  # images preprocessed and decoded together by caption_batch
_PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")
# 1.17's 4-bit MatMul kernel at accuracy level 4 kills the process (illegal instruction).
MIN_ONNXRUNTIME = (1, 18)


def check_onnxruntime_version(version: str = ort.__version__) -> None:
    """Raise BundleError when ``version`` is older than the bundles' decoders need."""
    found = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    if found < MIN_ONNXRUNTIME:
        needed = ".".join(map(str, MIN_ONNXRUNTIME))
        raise BundleError(
            f"onnxruntime {version} is too old for the model bundles: "
            f"install onnxruntime>={needed} (or onnxruntime-gpu>={needed})"
        )


# Most words a caption may be asked for: Flickr8k's longest has 37, and a model that never
# says <end> would otherwise decode for as long as it was allowed.
MAX_LENGTH = 1000
_INT, _NUMBER = (numbers.Integral, "an int"), (numbers.Real, "a number")
_OPTION_TYPES = {
    "beam_size": _INT,
    "max_length": _INT,
    "length_penalty": _NUMBER,
    "repeat_penalty": _NUMBER,
}


@dataclass(frozen=True)
class DecodeOptions:
    """How ``Captioner.caption`` and ``caption_batch`` decode; checked once, when made.

    Attributes:
        beam_size: beams kept per image; 1 is greedy decoding.
        max_length: most words per caption (``<end>`` not counted); None: the bundle's.
        length_penalty: alpha in ``score = log_prob / length ** alpha``, the length counting
            ``<end>``; 0 ranks by log-probability alone; None: the bundle's (tuned on the
            dev split).
        return_attention: fill ``CaptionResult.attention`` with (steps, grid_h, grid_w)
            attention weights.
        early_stopping: stop an image once ``beam_size`` captions have finished (default;
            what the bundles' length penalties were tuned with); False searches on while a
            live beam could still win after length normalisation (see ``beam_search``).
        repeat_penalty: log-prob taken off a word the caption already has, but for the
            bundle's repeatable words ("a", "in"): "a woman and a woman" gives way to "a man
            and a woman"; 0 turns it off; None: the bundle's (tuned on the dev split).
        name_animals: where the bundle's encoder has an ImageNet head, name the animal it
            sees in place of the caption's ("a dog" -> "a cat", see ``animals``); False
            gives the decoder's words as they are.

    Raises:
        TypeError: ``beam_size`` or ``max_length`` is not an int, a penalty not a number, or
            ``name_animals`` not a bool.
        ValueError: ``beam_size`` is below 1, ``max_length`` outside 1..MAX_LENGTH,
            ``length_penalty`` is not a finite number or ``repeat_penalty`` not a finite
            number >= 0.
    """

    beam_size: int = 3
    max_length: int | None = None
    length_penalty: float | None = None
    return_attention: bool = False
    early_stopping: bool = True
    repeat_penalty: float | None = None
    name_animals: bool = True

    def __post_init__(self):
        if not isinstance(self.name_animals, bool):
            raise TypeError(f"name_animals must be a bool, got {type(self.name_animals).__name__}")
        for name, (kind, described) in _OPTION_TYPES.items():
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
                raise TypeError(f"{name} must be {described}, got {type(value).__name__}")
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")
        if self.max_length is not None and not 1 <= self.max_length <= MAX_LENGTH:
            raise ValueError(f"max_length must be 1..{MAX_LENGTH}, got {self.max_length}")
        if self.length_penalty is not None and not math.isfinite(self.length_penalty):
            raise ValueError(f"length_penalty must be a finite number, got {self.length_penalty}")
        if self.repeat_penalty is not None:
            check_repeat_penalty(self.repeat_penalty)

    def with_defaults(self, bundle: Bundle) -> DecodeOptions:
        """These options, with the bundle's values where they are None."""
        return dataclasses.replace(
            self,
            max_length=bundle.max_length if self.max_length is None else self.max_length,
            length_penalty=bundle.length_penalty
            if self.length_penalty is None
            else self.length_penalty,
            repeat_penalty=bundle.repeat_penalty
            if self.repeat_penalty is None
            else self.repeat_penalty,
        )


@dataclass(frozen=True)
class CaptionResult:
    """The caption of one image.

    Attributes:
        text: the caption, without special tokens; "" when nothing was decoded or on error.
        tokens: the caption's words.
        score: length-normalised log-probability of the caption (higher is better).
        alternatives: the other finished beams as (text, score), best first.
        attention: None, or (steps, grid_h, grid_w) attention weights when asked for.
        error: in ``caption_batch``, the ImageError of an unusable input; else None.
        embedding: with ``caption_batch(return_embedding=True)``, the encoder's pooled
            embedding (D,), L2-normalised as ``encode`` returns it (the encoder runs once);
            else None.
    """

    text: str
    tokens: tuple[str, ...]
    score: float
    alternatives: tuple[tuple[str, float], ...] = ()
    attention: np.ndarray | None = None
    error: ImageError | None = None
    embedding: np.ndarray | None = None


_DECODE_FIELDS = tuple(field.name for field in dataclasses.fields(DecodeOptions))


def _select_providers(requested: Sequence[str] | None) -> list[str]:
    available = ort.get_available_providers()
    if requested is None:
        return [p for p in _PREFERRED_PROVIDERS if p in available]
    unknown = [p for p in requested if p not in available]
    if unknown:
        raise ValueError(
            f"Execution providers not available: {', '.join(unknown)}; "
            f"expected some of: {', '.join(available)}"
        )
    return list(requested)


class Captioner:
    """Caption images with a model bundle on ONNX Runtime.

    Sessions are created once in the constructor; a Captioner can be shared by threads.

    Args:
        model: a bundled model name (see ``bundled_models()``) or a bundle folder.
        providers: ONNX Runtime execution providers in order of preference; default CUDA
            when onnxruntime-gpu is installed, else CPU. ``self.providers`` shows those in use.
        threads: intra-op threads per session; default lets ONNX Runtime choose.
        max_pixels: larger images are refused with ImageError (decompression-bomb guard).

    Raises:
        BundleError: the bundle is missing, corrupt or cannot be loaded by ONNX Runtime.
        ValueError: a requested provider is not available.
    """

    def __init__(
        self,
        model: str | os.PathLike = DEFAULT_MODEL,
        *,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        check_onnxruntime_version()
        self.bundle: Bundle = load_bundle(model)
        self.max_pixels = max_pixels
        options = ort.SessionOptions()
        options.log_severity_level = 3  # ORT warnings about unused initialisers are noise here
        # The three sessions run in turn: threads left spinning after one (ORT's default) steal
        # the cores from the next. Off, a beam-3 caption took ~20% less here (2 cores).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        chosen = _select_providers(providers)
        self._sessions = {}
        for graph in GRAPHS:
            path = self.bundle.graph_path(graph)
            try:
                self._sessions[graph] = ort.InferenceSession(
                    str(path), sess_options=options, providers=chosen
                )
            except Exception as error:  # ORT raises its own untyped errors for bad files
                raise BundleError(f"ONNX Runtime cannot load {path}: {error}") from None
        outputs = {output.name for output in self._sessions[ENCODER].get_outputs()}
        if self.bundle.animal_threshold is not None and CLASSES_OUTPUT not in outputs:
            raise BundleError(
                f"{self.bundle.graph_path(ENCODER)} has no {CLASSES_OUTPUT!r} output, "
                "which the manifest's encoder.classes promises"
            )
        # ORT falls back to CPU silently when a provider fails: report what really runs.
        self.providers: list[str] = self._sessions[ENCODER].get_providers()

    @property
    def name(self) -> str:
        return self.bundle.name

    def encode(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the encoder on preprocessed pixels (N, H, W, 3), as ``preprocess`` makes them
        with ``self.bundle.image_spec``.

        Returns:
            features (N, L, D) and the L2-normalised pooled embedding (N, D).

        Raises:
            ValueError: the pixels are not of the dtype the bundle's encoder takes.
        """
        features, embedding, _ = self._encode(pixels, classes=False)
        return features, embedding

    def _encode(self, pixels: np.ndarray, classes: bool) -> tuple[np.ndarray, ...]:
        """``encode``'s outputs, then the ImageNet probabilities (N, 1000) when ``classes``
        (the encoder must have them), else None."""
        wanted = self.bundle.image_spec.dtype
        if pixels.dtype != wanted:
            raise ValueError(
                f"Bundle {self.name!r} encodes {wanted} pixels, got {pixels.dtype}: make them "
                "with preprocess(image, captioner.bundle.image_spec)"
            )
        names = ["features", "embedding", CLASSES_OUTPUT][: 3 if classes else 2]
        chunks = [
            self._sessions[ENCODER].run(names, {"image": pixels[start : start + ENCODER_BATCH]})
            for start in range(0, len(pixels), ENCODER_BATCH)
        ]
        outputs = [np.concatenate(parts) for parts in zip(*chunks, strict=True)]
        features, embedding = outputs[:2]
        norms = np.linalg.norm(embedding, axis=1, keepdims=True)
        return features, embedding / np.maximum(norms, 1e-12), outputs[2] if classes else None

    def caption(
        self,
        image: ImageInput,
        *,
        beam_size: int = 3,
        max_length: int | None = None,
        return_attention: bool = False,
        length_penalty: float | None = None,
        early_stopping: bool = True,
        repeat_penalty: float | None = None,
        name_animals: bool = True,
    ) -> CaptionResult:
        """Caption one image.

        Args:
            image: a path, bytes, binary file object, PIL image or uint8 HxWx3 RGB array.
            beam_size: beams kept; 1 is greedy decoding.
            max_length: most words per caption; default from the bundle.
            return_attention: fill ``result.attention`` with (steps, grid_h, grid_w) weights.
            length_penalty: alpha in ``score = log_prob / length ** alpha``; default from the
                bundle (tuned on the dev split); 0 ranks by log-probability alone.
            early_stopping, repeat_penalty, name_animals: see ``DecodeOptions``.

        Raises:
            ImageError: the image is unusable.
            ValueError: an option is out of range (see ``DecodeOptions``).
        """
        options = self._options(locals())
        pixels = preprocess(image, self.bundle.image_spec, max_pixels=self.max_pixels)
        return self._caption_pixels(pixels[None], options)[0]

    def caption_batch(
        self,
        images: Sequence[ImageInput],
        *,
        beam_size: int = 3,
        max_length: int | None = None,
        return_attention: bool = False,
        length_penalty: float | None = None,
        early_stopping: bool = True,
        repeat_penalty: float | None = None,
        name_animals: bool = True,
        strict: bool = False,
        return_embedding: bool = False,
    ) -> list[CaptionResult]:
        """Caption many images, ``BATCH_SIZE`` at a time: per chunk one batched encoder run
        and one decoder call per step for all its images.

        An unusable image does not stop the batch: its result has ``text == ""`` and the
        ImageError in ``result.error`` (with ``strict=True`` the first one is raised instead).
        ``return_embedding=True`` fills ``result.embedding`` from the same encoder run.
        Other arguments are as in ``caption``.

        Raises:
            ValueError: an option is out of range (see ``DecodeOptions``), even for no images.
        """
        options = self._options(locals())
        results: list[CaptionResult] = []
        for start in range(0, len(images), BATCH_SIZE):
            chunk = images[start : start + BATCH_SIZE]
            results += self._caption_chunk(chunk, options, strict, return_embedding)
        return results

    def _options(self, arguments: dict) -> DecodeOptions:
        """The call's options, checked, with the bundle's values where they are None.

        ``arguments``: the caller's ``locals()``; its keyword parameters are named after the
        ``DecodeOptions`` fields, so each option is written once, there.
        """
        given = {name: arguments[name] for name in _DECODE_FIELDS}
        return DecodeOptions(**given).with_defaults(self.bundle)

    def _caption_chunk(
        self,
        images: Sequence[ImageInput],
        options: DecodeOptions,
        strict: bool,
        return_embedding: bool = False,
    ) -> list[CaptionResult]:
        pixels, errors = [], {}
        for index, image in enumerate(images):
            try:
                pixels.append(preprocess(image, self.bundle.image_spec, max_pixels=self.max_pixels))
            except ImageError as error:
                if strict:
                    raise
                errors[index] = error
        decoded = iter(
            self._caption_pixels(np.stack(pixels), options, return_embedding) if pixels else []
        )
        return [
            CaptionResult(text="", tokens=(), score=float("-inf"), error=errors[index])
            if index in errors
            else next(decoded)
            for index in range(len(images))
        ]

    def _caption_pixels(
        self, pixels: np.ndarray, options: DecodeOptions, return_embedding: bool = False
    ) -> list[CaptionResult]:
        """Decode preprocessed pixels (N, H, W, 3) with options that have their defaults."""
        animal_threshold = self.bundle.animal_threshold if options.name_animals else None
        # (N, L, D), (N, D), (N, 1000) or None
        features, embeddings, classes = self._encode(pixels, animal_threshold is not None)
        memory, keys, hidden = self._sessions[DECODER_INIT].run(
            ["memory", "keys", "hidden"], {"features": features}
        )
        tiled: list = [None, None, None]  # rows, their memory, keys; per call: thread-safe

        def step(tokens: np.ndarray, state: np.ndarray, image_rows: np.ndarray):
            if image_rows is not tiled[0]:  # beam_search makes a new array when an image ends
                tiled[:] = image_rows, memory[image_rows], keys[image_rows]
            _, row_memory, row_keys = tiled
            return self._sessions[DECODER_STEP].run(
                ["log_probs", "next_hidden", "attention"],
                {
                    "token": np.asarray(tokens, np.int64),  # no copy: already int64
                    "hidden": state,
                    "memory": row_memory,
                    "keys": row_keys,
                },
            )

        vocabulary = self.bundle.vocabulary
        hypotheses = beam_search(
            step,
            hidden,
            start_id=vocabulary.start_id,
            end_id=vocabulary.end_id,
            beam_size=options.beam_size,
            max_length=options.max_length + 1,  # + 1 for <end>
            length_penalty=options.length_penalty,
            suppress_ids=vocabulary.never_generated,
            keep_attention=options.return_attention,
            early_stopping=options.early_stopping,
            repeat_penalty=options.repeat_penalty,
            repeatable_ids=self.bundle.repeatable_ids,
        )
        kinds = [None] * len(hypotheses) if classes is None else kind_probabilities(classes)
        results = [
            self._to_result(h, options.return_attention, image_kinds)
            for h, image_kinds in zip(hypotheses, kinds, strict=True)
        ]
        if return_embedding:
            results = [
                dataclasses.replace(result, embedding=embedding)
                for result, embedding in zip(results, embeddings, strict=True)
            ]
        return results

    def _to_result(
        self,
        hypotheses: list[Hypothesis],
        return_attention: bool,
        kinds: np.ndarray | None,
    ) -> CaptionResult:
        """``kinds``: the image's animal kind probabilities, to name its animal at the bundle's
        threshold; None keeps the words as decoded."""
        if not hypotheses:
            return CaptionResult(text="", tokens=(), score=float("-inf"))

        def words_of(hypothesis: Hypothesis) -> tuple[str, ...]:
            words = self.bundle.vocabulary.decode(hypothesis.tokens).split()
            if kinds is None:
                return tuple(words)
            return name_animal(words, kinds, self.bundle.animal_threshold)

        best, *others = hypotheses
        words = words_of(best)
        attention = None
        if return_attention and best.attention is not None:
            attention = best.attention.astype(np.float32).reshape(-1, *self.bundle.grid)
        return CaptionResult(
            text=" ".join(words),
            tokens=words,
            score=float(best.score),
            alternatives=tuple((" ".join(words_of(h)), float(h.score)) for h in others),
            attention=attention,
        )
