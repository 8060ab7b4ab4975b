"""The game index on disk: one NumPy .npz of arrays plus JSON, checked on the way back in.

An index file is input like any upload: it may be truncated, from another version, or made
by hand. So ``read_index`` checks every field's type, every array's dtype and shape, and
every cross-reference (an image's entry, the vectors' row count) before anything uses them,
and raises ``IndexFileError`` naming the problem, never a ``KeyError`` three calls later.
No pickle is ever loaded.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .catalog import CatalogEntry
from .errors import IndexFileError
from .media import MEDIA_KINDS, BuildReport

FORMAT_VERSION = 2  # 2: images carry a media kind and the text read in them


@dataclass(frozen=True)
class IndexImage:
    """One indexed catalogue image: a row of the vectors.

    Attributes:
        path: the image file, as resolved at build time.
        entry: the position of its entry in the index's entries.
        kind: its media kind (one of MEDIA_KINDS).
        text: the text read in it at build time ("" when none was read).
    """

    path: str
    entry: int
    kind: str
    text: str = ""


@dataclass(frozen=True)
class IndexContents:
    """What an index file holds, checked."""

    bundle: dict
    entries: list[CatalogEntry]
    images: list[IndexImage]
    report: BuildReport
    vectors: np.ndarray | None  # (M, D) float32, one row per image
    whitening: tuple[np.ndarray, np.ndarray] | None  # mean (D,), matrix (D, D)


def write_index(path: str | os.PathLike, contents: IndexContents) -> Path:
    """Write atomically: a crash never leaves a half-written index behind."""
    path = Path(path)
    report = contents.report
    meta = {
        "format_version": FORMAT_VERSION,
        "bundle": contents.bundle,
        "entries": [entry.to_dict() for entry in contents.entries],
        "images": [[i.path, i.entry, i.kind, i.text] for i in contents.images],
        "report": {
            "entries": report.entries,
            "built": report.built,
            "images": report.images,
            "kinds": report.kinds,
            "skipped": report.skipped,
            "problems": list(report.problems),
        },
    }
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    if contents.vectors is not None:
        arrays["vectors"] = contents.vectors
    if contents.whitening is not None:
        arrays["whitening_mean"], arrays["whitening_matrix"] = contents.whitening
    partial = path.with_name(path.name + ".part")
    with open(partial, "wb") as stream:  # a file object: np.savez would append ".npz"
        np.savez(stream, **arrays)
    partial.replace(path)
    return path


def read_index(path: str | os.PathLike) -> IndexContents:
    """Read and check an index file written by ``write_index``.

    Raises:
        IndexFileError: the file is missing, not a game index, of another format version,
            or inconsistent; the message names the field.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise IndexFileError(f"Index file not found: {path}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise IndexFileError(f"{path} is not a game index: {error}") from None
    if "meta" not in arrays or arrays["meta"].dtype != np.uint8 or arrays["meta"].ndim != 1:
        raise IndexFileError(f"{path} is not a game index: no metadata")
    try:
        meta = json.loads(arrays.pop("meta").tobytes())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise IndexFileError(f"{path}: metadata is not JSON: {error}") from None
    problem = _Checker(path)
    problem.expect(isinstance(meta, dict), "metadata must be a JSON object")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise IndexFileError(
            f"{path} has index format {version!r}; this SDK reads version {FORMAT_VERSION}: "
            "rebuild it with 'gamelab-caption index build'"
        )
    bundle = meta.get("bundle")
    problem.expect(
        isinstance(bundle, dict)
        and all(isinstance(bundle.get(key), str) for key in ("name", "encoder_sha256")),
        "'bundle' must hold the strings 'name' and 'encoder_sha256'",
    )
    entries = _entries(meta.get("entries"), problem)
    images = _images(meta.get("images"), len(entries), problem)
    report = _report(meta.get("report"), problem)
    vectors = _vectors(arrays.get("vectors"), len(images), problem)
    whitening = _whitening(arrays, vectors, problem)
    return IndexContents(dict(bundle), entries, images, report, vectors, whitening)


class _Checker:
    def __init__(self, path):
        self.path = path

    def expect(self, condition: bool, message: str) -> None:
        if not condition:
            raise IndexFileError(f"{self.path} is not a valid game index: {message}")


def _entries(raw, problem: _Checker) -> list[CatalogEntry]:
    problem.expect(isinstance(raw, list), "'entries' must be a list")
    entries = []
    for number, item in enumerate(raw):
        try:
            entries.append(CatalogEntry.from_dict(item))
        except (ValueError, TypeError) as error:
            problem.expect(False, f"entry {number}: {error}")
    return entries


def _images(raw, entry_count: int, problem: _Checker) -> list[IndexImage]:
    problem.expect(isinstance(raw, list), "'images' must be a list")
    images = []
    for number, item in enumerate(raw):
        problem.expect(
            isinstance(item, list)
            and len(item) == 4
            and isinstance(item[0], str)
            and type(item[1]) is int
            and isinstance(item[2], str)
            and isinstance(item[3], str),
            f"image {number} must be [path, entry, kind, text]",
        )
        path, entry, kind, text = item
        problem.expect(0 <= entry < entry_count, f"image {number} names entry {entry}")
        problem.expect(kind in MEDIA_KINDS, f"image {number} has unknown kind {kind!r}")
        images.append(IndexImage(path, entry, kind, text))
    return images


def _report(raw, problem: _Checker) -> BuildReport:
    problem.expect(isinstance(raw, dict), "'report' must be an object")
    counts = {key: raw.get(key) for key in ("entries", "built", "images")}
    problem.expect(
        all(type(value) is int and value >= 0 for value in counts.values()),
        "'report' counts must be non-negative integers",
    )
    tables = {key: raw.get(key, {}) for key in ("kinds", "skipped")}
    problem.expect(
        all(
            isinstance(table, dict)
            and all(isinstance(k, str) and type(v) is int for k, v in table.items())
            for table in tables.values()
        ),
        "'report' kinds and skipped must map names to integers",
    )
    problems = raw.get("problems", [])
    problem.expect(
        isinstance(problems, list) and all(isinstance(p, str) for p in problems),
        "'report' problems must be a list of strings",
    )
    return BuildReport(**counts, **tables, problems=tuple(problems))


def _vectors(vectors, rows: int, problem: _Checker) -> np.ndarray | None:
    if vectors is None:
        problem.expect(rows == 0, f"{rows} images but no vectors")
        return None
    problem.expect(
        vectors.dtype == np.float32 and vectors.ndim == 2 and vectors.shape[1] > 0,
        f"vectors must be a 2-D float32 array, got {vectors.dtype} {vectors.shape}",
    )
    problem.expect(
        len(vectors) == rows, f"{len(vectors)} vectors for {rows} images (one per image)"
    )
    problem.expect(bool(np.isfinite(vectors).all()), "vectors hold NaN or infinity")
    return vectors


def _whitening(arrays: dict, vectors, problem: _Checker):
    if "whitening_matrix" not in arrays and "whitening_mean" not in arrays:
        return None
    mean, matrix = arrays.get("whitening_mean"), arrays.get("whitening_matrix")
    problem.expect(mean is not None and matrix is not None, "half a whitening")
    size = mean.shape[0] if mean.ndim == 1 else -1
    problem.expect(
        mean.dtype == np.float32 and matrix.dtype == np.float32 and matrix.shape == (size, size),
        f"whitening must be float32 (D,) and (D, D), got {mean.shape} and {matrix.shape}",
    )
    problem.expect(
        vectors is None or vectors.shape[1] == size,
        f"whitening is {size}-dimensional, the vectors {vectors.shape[1]}",
    )
    problem.expect(bool(np.isfinite(matrix).all() and np.isfinite(mean).all()), "NaN whitening")
    return mean, matrix
