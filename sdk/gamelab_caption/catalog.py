"""Game catalogues: read EmulationStation gamelists, CSV and JSON Lines into one entry type.

``GameIndex`` (search.py) decides which entries are usable; this module only parses, so a
malformed file fails here with its name and line, and a dirty entry (no id, no image, an
image that is missing or corrupt) reaches the index, which skips it and counts why.
Image paths resolve relative to the catalogue file, as EmulationStation does.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ImageError
from .preprocessing import DEFAULT_MAX_PIXELS, load_image

CATALOG_FORMATS = {".xml": "xml", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
GAMELIST = "gamelist.xml"  # the file an EmulationStation system folder holds
IMAGE_SEPARATOR = "|"  # several images in one CSV cell: "front.jpg|back.jpg"
_XML_IMAGE_TAGS = ("image", "thumbnail")
_XML_RENAMES = {"desc": "description"}  # EmulationStation's tag -> the CSV/JSONL key
_OWN_KEYS = ("id", "name", "image", "platform")  # everything else goes into metadata
SKIP_REASONS = ("no id", "no image", "already indexed", "missing image", "corrupt image")

logger = logging.getLogger(__name__)

CatalogPath = str | os.PathLike


@dataclass(frozen=True)
class CatalogEntry:
    """One catalogue row: a release of a game, with its cover images.

    Attributes:
        game_id: the game's identity; regional releases of one game share it. "" if absent.
        name: the release's title.
        images: cover image paths, resolved against the catalogue's folder.
        platform: the system, e.g. "snes" (a gamelist's folder name); None if unknown.
        metadata: the other fields (description, genre, publisher, ...) as read.
        source: where the entry was read, for messages: "file:line" or "file entry N".
    """

    game_id: str
    name: str
    images: tuple[str, ...]
    platform: str | None = None
    metadata: dict = field(default_factory=dict)
    source: str = ""


@dataclass(frozen=True)
class BuildReport:
    """What went into an index.

    Attributes:
        entries: catalogue entries read.
        built: entries indexed with at least one image.
        images: cover images embedded.
        skipped: reason (one of SKIP_REASONS) -> entries left out for it.
        problems: one line per entry left out or image unusable, naming its source.
    """

    entries: int = 0
    built: int = 0
    images: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    def __add__(self, other: BuildReport) -> BuildReport:
        return BuildReport(
            entries=self.entries + other.entries,
            built=self.built + other.built,
            images=self.images + other.images,
            skipped=dict(Counter(self.skipped) + Counter(other.skipped)),
            problems=self.problems + other.problems,
        )


class CoverIntake:
    """Sort entries into cover images to open, and count and log what cannot be used.

    Args:
        entries: the entries to take in.
        indexed: (game_id, image path) pairs already indexed; they are not taken again.

    Attributes:
        covers: (entry position, image path) of every image to open, in catalogue order.
    """

    def __init__(self, entries: Iterable[CatalogEntry], indexed: Collection = frozenset()):
        self.entries = list(entries)
        self.covers: list[tuple[int, str]] = []
        self._skipped: Counter = Counter()
        self._problems: list[str] = []
        self._failed: dict[int, list[tuple[str, str]]] = {}  # entry -> [(reason, detail)]
        for position, entry in enumerate(self.entries):
            new = [path for path in entry.images if (entry.game_id, path) not in indexed]
            if not entry.game_id:
                self._note(entry, "no id", skip=True)
            elif not entry.images:
                self._note(entry, "no image", skip=True)
            elif not new:
                self._note(entry, "already indexed", skip=True)
            self.covers += [(position, path) for path in new] if entry.game_id else []

    def _note(self, entry: CatalogEntry, reason: str, detail: str = "", skip=False) -> None:
        where = entry.source or entry.name
        self._skipped[reason] += skip
        self._problems.append(f"{where}: {reason}{detail}")
        logger.warning("%s %s: %s%s", "Skipped" if skip else "In", where, reason, detail)

    def open(self, position: int, path: str, max_pixels: int = DEFAULT_MAX_PIXELS):
        """The cover as an RGB image, or None once noted as missing or corrupt."""
        failures = self._failed.setdefault(position, [])
        if not os.path.isfile(path):
            failures.append(("missing image", f" {path}"))
            return None
        try:
            return load_image(path, max_pixels=max_pixels)
        except ImageError as error:
            failures.append(("corrupt image", f": {error}"))
            return None

    def report(self, built: Collection[int], images: int) -> BuildReport:
        """The report once every cover was opened; ``built``: positions of indexed entries."""
        for position, failures in self._failed.items():
            for number, (reason, detail) in enumerate(failures, start=1):
                # an entry none of whose images opened is skipped for its last failure
                skip = position not in built and number == len(failures)
                self._note(self.entries[position], reason, detail, skip=skip)
        return BuildReport(
            entries=len(self.entries),
            built=len(built),
            images=images,
            skipped={reason: n for reason, n in self._skipped.items() if n},
            problems=tuple(self._problems),
        )


def catalog_files(catalog: CatalogPath | Iterable[CatalogPath]) -> list[Path]:
    """Expand one or more catalogue paths; a folder stands for the gamelist.xml files in it.

    Raises:
        ValueError: a path does not exist, or has a suffix that is not a catalogue format.
    """
    paths = [catalog] if isinstance(catalog, (str, os.PathLike)) else list(catalog)
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(path.rglob(GAMELIST))
            if not found:
                raise ValueError(f"Catalogue folder {path} holds no {GAMELIST}")
            files.extend(found)
        elif not path.is_file():
            raise ValueError(f"Catalogue file not found: {path}")
        elif path.suffix.lower() not in CATALOG_FORMATS:
            raise ValueError(
                f"Unknown catalogue format {path.suffix!r} of {path}, expected one of: "
                + ", ".join(CATALOG_FORMATS)
            )
        else:
            files.append(path)
    return files


def read_catalog(catalog: CatalogPath | Iterable[CatalogPath]) -> list[CatalogEntry]:
    """Parse catalogue files (gamelist.xml, .csv, .jsonl) into entries, in file order.

    Args:
        catalog: a path or several; a folder means every gamelist.xml below it.

    Raises:
        ValueError: a file is missing, of an unknown format, or malformed; the message
            names the file and the line.
    """
    readers = {"xml": _read_gamelist, "csv": _read_csv, "jsonl": _read_jsonl}
    entries = []
    for path in catalog_files(catalog):
        entries.extend(readers[CATALOG_FORMATS[path.suffix.lower()]](path))
    return entries


def _resolve(folder: Path, image: str) -> str:
    path = Path(image.strip()).expanduser()
    return os.path.normpath(path if path.is_absolute() else folder / path)


def _read_gamelist(path: Path) -> Iterator[CatalogEntry]:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as error:
        line, column = error.position
        raise ValueError(f"{path}:{line}:{column}: malformed XML: {error.msg}") from None
    if root.tag != "gameList":
        raise ValueError(f"{path}:1: root element is <{root.tag}>, expected <gameList>")
    platform = path.parent.name or None  # EmulationStation keeps one folder per system
    for number, game in enumerate(root.iter("game"), start=1):
        fields, images = {}, []
        for child in game:
            text = (child.text or "").strip()
            if child.tag in _XML_IMAGE_TAGS:
                if text and _resolve(path.parent, text) not in images:
                    images.append(_resolve(path.parent, text))
            elif text:
                fields[_XML_RENAMES.get(child.tag, child.tag)] = text
        fields.update({k: v for k, v in game.attrib.items() if k != "id"})
        yield CatalogEntry(
            game_id=game.get("id", "").strip(),
            name=fields.pop("name", ""),
            images=tuple(images),
            platform=fields.pop("platform", platform),
            metadata=fields,
            source=f"{path} entry {number}",
        )


def _entry(record: dict, images: list[str], folder: Path, source: str) -> CatalogEntry:
    game_id = record.get("id")
    return CatalogEntry(
        game_id="" if game_id is None else str(game_id).strip(),
        name=str(record.get("name") or "").strip(),
        images=tuple(_resolve(folder, image) for image in images if image.strip()),
        platform=record.get("platform") or None,
        metadata={k: v for k, v in record.items() if k not in _OWN_KEYS and v not in ("", None)},
        source=source,
    )


def _read_csv(path: Path) -> Iterator[CatalogEntry]:
    with open(path, newline="", encoding="utf-8-sig") as stream:  # -sig: Excel writes a BOM
        reader = csv.reader(stream, strict=True)
        try:
            header = [name.strip().lower() for name in next(reader, [])]
            missing = [name for name in ("id", "name", "image") if name not in header]
            if missing:
                raise ValueError(
                    f"{path}:1: CSV header lacks the column(s) {', '.join(missing)}; "
                    f"it has: {', '.join(header) or 'nothing'}"
                )
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise ValueError(
                        f"{path}:{reader.line_num}: expected {len(header)} fields, got {len(row)}"
                    )
                record = dict(zip(header, row, strict=True))
                images = record["image"].split(IMAGE_SEPARATOR)
                yield _entry(record, images, path.parent, f"{path}:{reader.line_num}")
        except csv.Error as error:
            raise ValueError(f"{path}:{reader.line_num}: malformed CSV: {error}") from None


def _read_jsonl(path: Path) -> Iterator[CatalogEntry]:
    with open(path, encoding="utf-8-sig") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: malformed JSON: {error.msg}") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object, got {line.strip()!r}")
            images = record.get("image") or []
            images = [images] if isinstance(images, str) else images
            if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
                raise ValueError(f"{path}:{number}: 'image' must be a path or a list of paths")
            yield _entry(record, images, path.parent, f"{path}:{number}")
