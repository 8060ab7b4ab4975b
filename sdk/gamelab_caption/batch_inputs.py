"""The images a batch job reads: folders, globs, tables of paths, or game catalogues.

Every input becomes a list of ``BatchItem``s with absolute paths, because Ray workers on
other machines (or in another working folder) open the files themselves. A table is a
Parquet, CSV or JSON Lines file with a column of image paths; relative paths in it are read
relative to the table's folder, as catalogue paths are (catalog.py). In catalogue mode the
items are the catalogues' media, in the order ``GameIndex.build`` takes them, each naming
the image before it (its ``clutter``, see index_media.py).

Parquet needs pyarrow (the ``ray`` extra); it is imported only when a Parquet table is read.
"""

from __future__ import annotations

import csv
import glob
import importlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .errors import BatchInputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
TABLE_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl"}
TABLE_SUFFIXES[".ndjson"] = "jsonl"
GLOB_CHARACTERS = "*?["
RAY_INSTALL = "pip install 'gamelab-caption-sdk[ray]'"


@dataclass(frozen=True)
class BatchItem:
    """One image to process.

    Attributes:
        path: the image file, absolute.
        kind: catalogue mode: the media kind (media.MEDIA_KINDS); else None.
        clutter: catalogue mode: the catalogue's previous image (absolute), or None.
    """

    path: str
    kind: str | None = None
    clutter: str | None = None

    @property
    def key(self) -> tuple[str, str | None]:
        """What a row is done for: its path, and in catalogue mode its clutter too (an image
        listed by two games follows two different images)."""
        return (self.path, self.clutter)


def import_extra(package: str, submodule: str):
    """A package of the ray extra with the submodule it is used through (``ray.data``,
    ``pyarrow.parquet``), or an ImportError naming the extra that installs it."""
    try:
        importlib.import_module(f"{package}.{submodule}")
    except ImportError as missing:
        raise ImportError(f"batch jobs need Ray Data and pyarrow: {RAY_INSTALL}") from missing
    return importlib.import_module(package)


def import_pyarrow():
    return import_extra("pyarrow", "parquet")


def _is_glob(text: str) -> bool:
    return any(character in text for character in GLOB_CHARACTERS)


def folder_images(folder: str) -> list[str]:
    """The image files in ``folder`` and its subfolders, by suffix, in sorted order."""
    found = []
    for parent, subfolders, names in os.walk(folder):
        subfolders.sort()
        found += [
            os.path.join(parent, name)
            for name in sorted(names)
            if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES
        ]
    return found


def _table_rows(path: str, kind: str) -> tuple[list[str], list[dict]]:
    """(column names, rows) of a CSV or JSON Lines table."""
    if kind == "csv":
        with open(path, newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file)
            return list(reader.fieldnames or []), list(reader)
    rows = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as problem:
                raise BatchInputError(f"{path}:{number}: not JSON ({problem})") from None
            if not isinstance(row, dict):
                raise BatchInputError(f"{path}:{number}: expected a JSON object per line")
            rows.append(row)
    return list(dict.fromkeys(key for row in rows for key in row)), rows


def read_table_paths(path: str, column: str = "path") -> list[str]:
    """The image paths in a Parquet, CSV or JSON Lines table, absolute.

    Empty cells are skipped. Relative paths are relative to the table's folder.

    Raises:
        BatchInputError: the table cannot be read, or has no such column.
        ImportError: a Parquet table without pyarrow.
    """
    kind = TABLE_SUFFIXES[os.path.splitext(path)[1].lower()]
    try:
        if kind == "parquet":
            pyarrow = import_pyarrow()
            try:
                names = pyarrow.parquet.read_schema(path).names
                if column not in names:
                    raise _no_column(path, column, names)
                values = pyarrow.parquet.read_table(path, columns=[column]).column(0).to_pylist()
            except pyarrow.ArrowException as problem:
                raise BatchInputError(f"Cannot read the Parquet table {path}: {problem}") from None
        else:
            names, rows = _table_rows(path, kind)
            if column not in names:
                raise _no_column(path, column, names)
            values = [row.get(column) for row in rows]
    except (OSError, UnicodeDecodeError, csv.Error) as problem:
        raise BatchInputError(f"Cannot read the table {path}: {problem}") from None
    folder = os.path.dirname(os.path.abspath(path))
    return [os.path.join(folder, str(value)) for value in values if value not in (None, "")]


def _no_column(path: str, column: str, names: Sequence[str]) -> BatchInputError:
    return BatchInputError(
        f"{path} has no column {column!r} of image paths (choose it with --path-column); "
        f"its columns: {', '.join(map(str, names)) or 'none'}"
    )


def collect_paths(inputs: Iterable[str | os.PathLike], column: str = "path") -> list[str]:
    """Absolute image paths from folders (searched recursively), globs, tables and files.

    Each path appears once, in the order first given; a folder's images are sorted by name.

    Raises:
        BatchInputError: an input does not exist, a glob matches nothing, a table cannot be
            read or has no ``column``.
    """
    paths = []
    for given in map(os.fspath, inputs):
        if os.path.isdir(given):
            paths += folder_images(given)
        elif os.path.isfile(given):
            suffix = os.path.splitext(given)[1].lower()
            paths += read_table_paths(given, column) if suffix in TABLE_SUFFIXES else [given]
        elif _is_glob(given):
            matches = sorted(m for m in glob.glob(given, recursive=True) if os.path.isfile(m))
            if not matches:
                raise BatchInputError(f"No file matches {given!r}")
            paths += matches
        else:
            raise BatchInputError(f"Input not found: {given} (a folder, glob, table or image)")
    return list(dict.fromkeys(os.path.abspath(path) for path in paths))


def collect_catalog_media(
    catalogs: Iterable[str | os.PathLike], media_dirs: Iterable[str | os.PathLike] = ()
) -> list[BatchItem]:
    """The media of game catalogues, as ``GameIndex.build(catalogs, media_dirs=...)`` takes
    them in (MediaIntake): each with its kind and the previous image as its clutter.

    Raises:
        BatchInputError: a catalogue is missing or malformed, or a media folder is missing.
    """
    from .catalog import read_catalog  # the plain-image route never needs it
    from .media import MediaIntake

    entries = []
    for catalog in catalogs:
        try:
            entries += read_catalog(catalog, media_dirs=media_dirs)
        except ValueError as problem:
            raise BatchInputError(str(problem)) from None
    items, previous = [], None
    for _, media in MediaIntake(entries).media:
        path = os.path.abspath(media.path)
        items.append(BatchItem(path, media.kind, previous))
        previous = path
    return list({item.key: item for item in items}.values())
