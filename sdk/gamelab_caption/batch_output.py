"""A batch job's output folder: Parquet part files, written atomically, read to resume.

The output is a folder of ``part-*.parquet`` files (one Parquet data set: pandas, pyarrow,
Spark, DuckDB and ``ray.data.read_parquet`` read the folder as one table). The driver writes
a part every FLUSH_ROWS rows or FLUSH_SECONDS, first to a hidden ``.tmp`` file it then
renames, so a crash leaves only whole parts and loses at most the rows not yet flushed (the
file a crash cuts short starts with ".", which Parquet readers skip: the folder still reads
as one table). A re-run reads which images the parts hold and processes only the others.
Each part carries the job's settings (bundle, encoder hash, what was computed) in its schema
metadata, so a re-run with other settings cannot mix its rows in.
"""

from __future__ import annotations

import glob
import json
import os
import time
import uuid
from dataclasses import dataclass

import numpy as np

from .batch_inputs import import_pyarrow
from .batch_worker import MISSING
from .errors import BatchInputError, BundleError

FLUSH_ROWS = 4096  # rows per part file at most
FLUSH_SECONDS = 60.0  # a part at least this often while rows come in: what a crash can lose
METADATA_KEY = b"gamelab_caption.batch"
PART_PATTERN = "part-*.parquet"


def _parts(folder: str) -> list[str]:
    return sorted(glob.glob(os.path.join(glob.escape(folder), PART_PATTERN)))


def _settings_of(pyarrow, part: str) -> dict:
    try:
        metadata = pyarrow.parquet.read_schema(part).metadata or {}
        return json.loads(metadata[METADATA_KEY])
    except (pyarrow.ArrowException, OSError, KeyError, ValueError) as problem:
        raise BatchInputError(f"{part} is not a part of a batch job's output: {problem}") from None


def _difference(settings: dict, found: dict) -> str:
    keys = sorted(set(settings) | set(found))
    return ", ".join(
        f"{key} {found.get(key)!r} (now {settings.get(key)!r})"
        for key in keys
        if settings.get(key) != found.get(key)
    )


def done_keys(folder: str, settings: dict) -> set[tuple[str, str | None]]:
    """The (path, clutter) of every row already in ``folder``; removes unfinished ``.tmp`` parts.

    Raises:
        BatchInputError: ``folder`` is a file, or holds rows made with other settings, or a
            part that cannot be read.
    """
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise BatchInputError(f"The output {folder} is a file; it must be a folder")
    for pattern in (".part-*.parquet.tmp", "part-*.parquet.tmp"):  # also earlier runs' names
        for stale in glob.glob(os.path.join(glob.escape(folder), pattern)):
            os.remove(stale)  # a part a crashed run did not finish
    pyarrow = import_pyarrow()
    done = set()
    for part in _parts(folder):
        found = _settings_of(pyarrow, part)
        if found != settings:
            raise BatchInputError(
                f"{folder} holds results made with other settings: {_difference(settings, found)}; "
                "write to another output folder, or run with those settings"
            )
        columns = ["path", "clutter"] if settings["catalog"] else ["path"]
        table = pyarrow.parquet.read_table(part, columns=columns)
        clutters = table.column("clutter").to_pylist() if settings["catalog"] else None
        paths = table.column("path").to_pylist()
        done.update(zip(paths, clutters or [None] * len(paths), strict=True))
    return done


class PartWriter:
    """Collect result tables and write them to ``folder`` as part files.

    Args:
        folder: the output folder, created if needed.
        settings: stored in every part's schema metadata.
    """

    def __init__(self, folder: str, settings: dict):
        self.folder = folder
        self.rows = 0  # rows written
        self._metadata = {METADATA_KEY: json.dumps(settings, sort_keys=True).encode()}
        self._pending = []
        self._pending_rows = 0
        self._last = time.monotonic()
        self._run = uuid.uuid4().hex[:12]
        self._number = 0
        os.makedirs(folder, exist_ok=True)

    def add(self, table) -> None:
        """Queue a table of rows; writes a part when FLUSH_ROWS or FLUSH_SECONDS is reached."""
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= FLUSH_ROWS or time.monotonic() - self._last >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write the queued rows as one part (to a hidden ``.tmp``, then renamed)."""
        self._last = time.monotonic()
        if not self._pending:
            return
        pyarrow = import_pyarrow()
        table = pyarrow.concat_tables(self._pending)
        table = table.replace_schema_metadata(self._metadata)
        name = f"part-{self._run}-{self._number:05d}.parquet"
        unfinished = os.path.join(self.folder, f".{name}.tmp")
        pyarrow.parquet.write_table(table, unfinished)
        os.replace(unfinished, os.path.join(self.folder, name))
        self._number += 1
        self.rows += table.num_rows
        self._pending, self._pending_rows = [], 0


@dataclass(frozen=True)
class StoredMedia:
    """What a batch job in catalogue mode stored for one image (see index_media.py).

    Attributes:
        embedding: (D,) the image's encoder embedding, as ``Captioner.encode`` returns it.
        photos: (IMAGE_PHOTOS, D) its simulated photos' embeddings.
        text: the text read in it ("" if none or not read).
        error: why it could not be used, or None.
        missing: the file did not exist.
    """

    embedding: np.ndarray | None
    photos: np.ndarray | None
    text: str
    error: str | None
    missing: bool


def read_catalog_rows(
    folder: str | os.PathLike, identity: dict, read_text: bool
) -> dict[tuple[str, str | None], StoredMedia]:
    """The rows of a catalogue-mode batch output by (path, clutter), for ``GameIndex``.

    Args:
        folder: the job's output folder.
        identity: the index's bundle name and encoder sha256; the job must have used it.
        read_text: whether the index reads text; then the job must have read it too.

    Raises:
        BatchInputError: no parts, parts that are not catalogue-mode, or made without text.
        BundleError: the job ran another encoder.
    """
    folder = os.fspath(folder)
    pyarrow = import_pyarrow()
    parts = _parts(folder)
    if not parts:
        raise BatchInputError(f"No batch output in {folder} (no {PART_PATTERN} files)")
    rows = {}
    for part in parts:
        settings = _settings_of(pyarrow, part)
        if not settings["catalog"] or not settings["embed"]:
            raise BatchInputError(
                f"{part} holds no catalogue embeddings: make them with "
                "'gamelab-caption batch --catalog CATALOG... --output DIR'"
            )
        if settings["encoder_sha256"] != identity["encoder_sha256"]:
            raise BundleError(
                f"{folder} was made with bundle {settings['model_name']!r}, the index uses "
                f"{identity['name']!r} (another encoder): build it with --model of that bundle"
            )
        if read_text and not settings["read_text"]:
            raise BatchInputError(
                f"{folder} was made without reading text (--no-text): build the index "
                "without text too (read_text=False, --no-text), or run the job with text"
            )
        table = pyarrow.parquet.read_table(part)
        embeddings = _matrix(table.column("embedding"))  # (rows, D)
        photos = _matrix(table.column("photos"))  # (rows, P, D)
        columns = {name: table.column(name).to_pylist() for name in ("path", "clutter", "text")}
        errors = table.column("error").to_pylist()
        types = table.column("error_type").to_pylist()
        keys = zip(columns["path"], columns["clutter"], strict=True)
        for number, (path, clutter) in enumerate(keys):
            usable = errors[number] is None
            rows[(path, clutter)] = StoredMedia(
                embedding=embeddings[number] if usable else None,
                photos=photos[number] if usable else None,
                text=columns["text"][number] or "",
                error=errors[number],
                missing=types[number] == MISSING,
            )
    return rows


def _matrix(column) -> np.ndarray:
    """A column of fixed-size lists of float32 (nested or not) as one array (rows, [P,] D);
    null rows read as zeros."""
    array = column.combine_chunks()
    shape = [len(array)]
    while hasattr(array, "flatten") and hasattr(array.type, "list_size"):
        shape.append(array.type.list_size)
        array = array.values  # the child values, nulls' slots included (zeros)
    return np.asarray(array.to_numpy(zero_copy_only=False), np.float32).reshape(shape)
