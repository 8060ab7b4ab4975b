"""The Ray Data actor of a batch job: one Captioner per actor, one table of rows per batch.

Ray calls ``BatchCaptioner(...)`` once per actor, which loads the bundle once, and then
calls the object on each batch (a pyarrow table of paths) from ``map_batches``. The work on
the images is the SDK's own: ``caption_batch`` for captions (and the embedding of the same
encoder run), ``index_media`` for embeddings, simulated photos and text as ``GameIndex``
computes them. An image that cannot be opened becomes a row with its error; nothing a file
holds fails the batch. pyarrow is imported when a batch is processed, never on import.
"""

from __future__ import annotations

import os

import numpy as np

from .captioner import Captioner
from .errors import ImageError
from .index_media import IMAGE_PHOTOS, READ_KINDS, encode_views, text_of, view_pixels
from .preprocessing import load_for_encoder, load_image, to_pixels

MISSING = "FileNotFoundError"  # error_type of a row whose file does not exist


def output_schema(pyarrow, settings: dict, dimensions: int):
    """The Parquet schema of a job's rows, for ``settings`` as stored with the output."""
    floats = pyarrow.list_(pyarrow.float32(), dimensions)  # fixed size: D per image
    fields = [
        ("path", pyarrow.string()),
        ("error", pyarrow.string()),
        ("error_type", pyarrow.string()),
    ]
    if settings["caption"]:
        alternative = pyarrow.struct([("caption", pyarrow.string()), ("score", pyarrow.float64())])
        fields += [
            ("caption", pyarrow.string()),
            ("score", pyarrow.float64()),
            ("alternatives", pyarrow.list_(alternative)),
        ]
    if settings["embed"]:
        fields.append(("embedding", floats))
    if settings["catalog"]:
        fields += [
            ("kind", pyarrow.string()),
            ("clutter", pyarrow.string()),
            ("photos", pyarrow.list_(floats, IMAGE_PHOTOS)),
            ("text", pyarrow.string()),
        ]
    return pyarrow.schema(fields)


class BatchCaptioner:
    """Caption and/or embed a batch of images: the callable class for ``map_batches``.

    Args:
        settings: what to compute, as stored with the output (batch.py, ``_settings``).
        model: the bundle: a bundled name, or a folder every worker can read.
        providers: ONNX Runtime providers (see Captioner).
        threads: ONNX Runtime intra-op threads, the actor's CPUs.
    """

    def __init__(
        self, settings: dict, model: str, providers: list[str] | None, threads: int | None
    ):
        self.settings = settings
        self.captioner = Captioner(model, providers=providers, threads=threads)
        self.reader = None
        if settings["catalog"] and settings["read_text"]:
            from .ocr import TextReader  # the ocr extra, on the actors that read text

            self.reader = TextReader()
        spec = self.captioner.bundle.image_spec
        dimensions = self.captioner.encode(np.zeros((2, *spec.size, 3), spec.dtype))[1]
        self._dimensions = dimensions.shape[1]

    def _size(self) -> tuple[int, int]:
        return tuple(self.captioner.bundle.image_spec.size)

    def __call__(self, batch):
        """A pyarrow table with ``path`` (and in catalogue mode ``kind``, ``clutter``) ->
        a table of the output schema, one row per input row, in the same order."""
        import pyarrow

        paths = batch.column("path").to_pylist()
        catalog = self.settings["catalog"]
        kinds = batch.column("kind").to_pylist() if catalog else [None] * len(paths)
        clutters = batch.column("clutter").to_pylist() if catalog else [None] * len(paths)
        images, errors = [], []
        for path in paths:
            image, error = self._open(path)
            images.append(image)
            errors.append(error)
        good = [number for number, image in enumerate(images) if image is not None]
        columns = {
            "path": paths,
            "error": [None if error is None else str(error) for error in errors],
            "error_type": [None if error is None else _error_type(error) for error in errors],
        }
        opened = [images[number] for number in good]
        if self.settings["caption"]:
            columns.update(self._captions(opened, good, len(paths)))
        if catalog:
            columns.update(self._index_views(opened, good, paths, kinds, clutters))
        elif self.settings["embed"] and "embedding" not in columns:
            pixels = [to_pixels(image, self.captioner.bundle.image_spec) for image in opened]
            embedding = encode_views(self.captioner, np.stack(pixels)) if pixels else []
            columns["embedding"] = _spread(list(embedding), good, len(paths))
        schema = output_schema(pyarrow, self.settings, self._dimensions)
        arrays = [_column(pyarrow, columns[field.name], field.type) for field in schema]
        return pyarrow.Table.from_arrays(arrays, schema=schema)

    def _open(self, path: str):
        """(RGB image, None), or (None, the error) for a file that is missing or unusable."""
        if not os.path.isfile(path):
            return None, FileNotFoundError(f"Image file not found: '{path}'")
        try:
            # Catalogue images are decoded in full, as an index build decodes them; photos
            # to caption as Captioner.caption decodes them.
            limit = self.captioner.max_pixels
            if self.settings["catalog"]:
                return load_image(path, max_pixels=limit), None
            spec = self.captioner.bundle.image_spec
            return load_for_encoder(path, spec, max_pixels=limit), None
        except ImageError as error:
            return None, error

    def _captions(self, opened: list, good: list[int], total: int) -> dict:
        # The caption's encoder run gives the embedding too, except where it must match an
        # index build's exactly (catalogue mode: encode_views).
        embed = self.settings["embed"] and not self.settings["catalog"]
        results = self.captioner.caption_batch(
            opened,
            beam_size=self.settings["beam_size"],
            max_length=self.settings["max_length"],
            return_embedding=embed,
        )
        columns = {
            "caption": _spread([result.text for result in results], good, total),
            "score": _spread([_finite(result.score) for result in results], good, total),
            "alternatives": _spread(
                [
                    [{"caption": text, "score": _finite(score)} for text, score in r.alternatives]
                    for r in results
                ],
                good,
                total,
            ),
        }
        if embed:
            columns["embedding"] = _spread([r.embedding for r in results], good, total)
        return columns

    def _index_views(self, opened, good, paths, kinds, clutters) -> dict:
        """The image's and its photos' embeddings, and its text, as GameIndex computes them."""
        spec = self.captioner.bundle.image_spec
        views, texts = [], []
        for image, number in zip(opened, good, strict=True):
            clutter = self._open(clutters[number])[0] if clutters[number] else None
            views.append(view_pixels(image, spec, paths[number], clutter, IMAGE_PHOTOS))
            read = self.reader is not None and kinds[number] in READ_KINDS
            lines = self.reader.read(image, max_pixels=self.captioner.max_pixels) if read else []
            texts.append(text_of(lines))
        vectors = []
        if views:
            encoded = encode_views(self.captioner, np.concatenate(views))  # (n * (1 + P), D)
            vectors = list(encoded.reshape(len(views), 1 + IMAGE_PHOTOS, -1))  # n x (1 + P, D)
        columns = {
            "kind": kinds,
            "clutter": clutters,
            "photos": _spread([list(views[1:]) for views in vectors], good, len(paths)),
            "text": _spread(texts, good, len(paths)),
        }
        if self.settings["embed"]:
            columns["embedding"] = _spread([views[0] for views in vectors], good, len(paths))
        return columns


def _error_type(error: Exception) -> str:
    return MISSING if isinstance(error, FileNotFoundError) else type(error).__name__


def _finite(score: float) -> float | None:
    return score if np.isfinite(score) else None


def _spread(values: list, good: list[int], total: int) -> list:
    """Values of the opened images at their rows; None at the others."""
    column = [None] * total
    for number, value in zip(good, values, strict=True):
        column[number] = value
    return column


def _column(pyarrow, values: list, kind):
    """A pyarrow array of ``kind``; rows of vectors (D,) or (P, D) become fixed-size lists."""
    if not pyarrow.types.is_fixed_size_list(kind):
        return pyarrow.array(values, type=kind)
    shape, inner = [], kind
    while pyarrow.types.is_fixed_size_list(inner):
        shape.append(inner.list_size)
        inner = inner.value_type
    flat = np.zeros((len(values), *shape), np.float32)  # (rows, [P,] D), zeros where null
    for number, value in enumerate(values):
        if value is not None:
            flat[number] = value
    array = pyarrow.array(flat.reshape(-1))
    for size in reversed(shape[1:]):
        array = pyarrow.FixedSizeListArray.from_arrays(array, size)
    mask = pyarrow.array([value is None for value in values])
    return pyarrow.FixedSizeListArray.from_arrays(array, shape[0], mask=mask)
