"""Game catalogues: read EmulationStation gamelists, CSV and JSON Lines into one entry type.

Catalogues are read as scrapers write them. A gamelist's id is an ``id`` attribute or an
``<id>`` child, or missing; an entry's images are its image tags (cover, back, title screen,
marquee, ...) plus what ES-DE and RetroArch keep in media folders named after the ROM
(media.py). An entry without id gets one derived from its system and ROM name (see
``CatalogEntry``), so a gamelist that was never scraped for ids still groups regional
releases into games.

``GameIndex`` (search.py) decides which entries are usable; this module only parses, so a
malformed file fails here with its name and line, and a dirty entry (no id, no image, an
image that is missing or corrupt) reaches the index, which skips it and counts why
(``MediaIntake``, media.py). Image paths resolve relative to the catalogue file, as
EmulationStation does.
"""

from __future__ import annotations

import csv
import json
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .media import (
    MEDIA_KINDS,
    SKIP_REASONS,
    BuildReport,
    MediaFolders,
    MediaImage,
    MediaIntake,
    retroarch_label,
    rom_stem,
)
from .titles import title_key

__all__ = [
    "CATALOG_FORMATS",
    "CatalogPath",
    "MEDIA_KINDS",
    "MEDIA_TAGS",
    "SKIP_REASONS",
    "BuildReport",
    "CatalogEntry",
    "MediaImage",
    "MediaIntake",
    "catalog_files",
    "read_catalog",
    "retroarch_label",
]

CATALOG_FORMATS = {".xml": "xml", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
GAMELIST = "gamelist.xml"  # the file an EmulationStation system folder holds
IMAGE_SEPARATOR = "|"  # several images in one CSV cell: "front.jpg|back.jpg"
# Gamelist tags (EmulationStation, Batocera, recalbox), also CSV columns and JSONL keys -> kind.
# "image" is the gamelist's main image: a box cover in most scrapes (recalbox's included),
# though some Batocera/ES scrapes put a screenshot there.
MEDIA_TAGS = {
    "image": "cover",
    "thumbnail": "cover",
    "boxart": "cover",
    "boxback": "back_cover",
    "screenshot": "screenshot",
    "titleshot": "title_screen",
    "marquee": "logo",
    "wheel": "logo",
    "cartridge": "physical",
    "fanart": "fan_art",
    "mix": "mix",
}
ROM_KEYS = ("path", "rom")  # the ROM path: a gamelist's <path>, or a CSV/JSONL column
_XML_RENAMES = {"desc": "description"}  # EmulationStation's tag -> the CSV/JSONL key
_XML_DECLARATION = re.compile(rb"(\xef\xbb\xbf)?<\?xml[^>]*\?>")  # XML allows it only first
_DOCTYPE = re.compile(rb"\s*<!DOCTYPE[^\[>]*(\[.*?\])?\s*>", re.DOTALL)
_OWN_KEYS = ("id", "name", "platform", *ROM_KEYS, *MEDIA_TAGS)  # the rest is metadata
_ENTRY_TYPES = {  # CatalogEntry.to_dict() key -> the JSON types it may hold
    "game_id": (str,),
    "name": (str,),
    "media": (list, tuple),
    "platform": (str, type(None)),
    "rom": (str, type(None)),
    "id_derived": (bool,),
    "metadata": (dict,),
    "source": (str,),
}

CatalogPath = str | os.PathLike


@dataclass(frozen=True)
class CatalogEntry:
    """One catalogue row: a release of a game, with its images.

    An entry without id gets ``game_id = "<platform>/<title_key(ROM stem)>"`` (the ROM
    file name without extension, or the name if there is no ROM path; no ``<platform>/``
    if the platform is unknown), so ``Foo (USA).zip`` and ``Foo (Europe).zip`` of one
    system are one game. A name that ``title_key`` reduces to nothing (only tags, or a
    non-Latin script) is kept lower-cased instead.

    Attributes:
        game_id: the game's identity; regional releases of one game share it. "" only if the
            entry has no id, ROM path or name.
        name: the release's title.
        media: its images, each path once, in catalogue order: the catalogue's own image
            fields, then the media folders'. Plain path strings are taken as covers.
        platform: the system, e.g. "snes" (a gamelist's folder name); None if unknown.
        rom: the ROM path as the catalogue gives it; None if it gives none.
        id_derived: the catalogue gave no id; ``game_id`` was derived as above.
        metadata: the other fields (description, genre, publisher, ...) as read.
        source: where the entry was read, for messages: "file:line" or "file entry N".
    """

    game_id: str
    name: str
    media: tuple[MediaImage, ...]
    platform: str | None = None
    rom: str | None = None
    id_derived: bool = False
    metadata: dict = field(default_factory=dict)
    source: str = ""

    def __post_init__(self):
        media = tuple(MediaImage(i, "cover") if isinstance(i, str) else i for i in self.media)
        object.__setattr__(self, "media", media)

    @property
    def images(self) -> tuple[str, ...]:
        """The paths of ``media``, in order."""
        return tuple(image.path for image in self.media)

    def to_dict(self) -> dict:
        """The entry as JSON-ready types; ``CatalogEntry.from_dict`` reads it back."""
        return {
            "game_id": self.game_id,
            "name": self.name,
            "media": [{"path": image.path, "kind": image.kind} for image in self.media],
            "platform": self.platform,
            "rom": self.rom,
            "id_derived": self.id_derived,
            "metadata": dict(self.metadata),
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> CatalogEntry:
        """Read an entry written by ``to_dict``, checking it: index files are untrusted.

        Raises:
            ValueError: ``data`` lacks a key, has an unknown one, a value of the wrong type,
                or an image of unknown kind; the message says which.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"A catalogue entry must be an object, got {type(data).__name__}")
        missing = [key for key in _ENTRY_TYPES if key not in data]
        unknown = [str(key) for key in data if key not in _ENTRY_TYPES]
        if missing or unknown:
            raise ValueError(
                f"Catalogue entry lacks {', '.join(missing) or 'nothing'} and has unknown "
                f"key(s) {', '.join(unknown) or 'none'}; expected: {', '.join(_ENTRY_TYPES)}"
            )
        for key, types in _ENTRY_TYPES.items():
            if not isinstance(data[key], types):
                expected = " or ".join("null" if t is type(None) else t.__name__ for t in types)
                raise ValueError(
                    f"Catalogue entry {key!r} must be {expected}, got {type(data[key]).__name__}"
                )
        if not all(isinstance(key, str) for key in data["metadata"]):
            raise ValueError("Catalogue entry 'metadata' keys must be strings")
        media = []
        for number, image in enumerate(data["media"]):
            if not isinstance(image, Mapping) or set(image) != {"path", "kind"}:
                raise ValueError(
                    f"Catalogue entry media[{number}] must be an object with keys path and "
                    f"kind, got {image!r}"
                )
            try:
                media.append(MediaImage(image["path"], image["kind"]))
            except ValueError as error:
                raise ValueError(f"Catalogue entry media[{number}]: {error}") from None
        return cls(**{**data, "media": tuple(media), "metadata": dict(data["metadata"])})


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


def read_catalog(
    catalog: CatalogPath | Iterable[CatalogPath],
    *,
    media_dirs: CatalogPath | Iterable[CatalogPath] = (),
) -> list[CatalogEntry]:
    """Parse catalogue files (gamelist.xml, .csv, .jsonl) into entries, in file order.

    Each entry gets its catalogue's image fields and the images named after its ROM in
    media folders: those next to the catalogue (``<dir>/downloaded_media/<platform>/``,
    ``<dir>/downloaded_media/``, ES-DE's ``<dir>/../../downloaded_media/<platform>/`` and
    libretro's ``<dir>/Named_*``) and those in ``media_dirs``. Each folder is listed once.

    Args:
        catalog: a path or several; a folder means every gamelist.xml below it.
        media_dirs: media folders for every entry read: each holds kind folders directly
            (ES-DE's ``covers``, ``screenshots``, ...; libretro's ``Named_Boxarts``, ...) or
            is an ES-DE ``downloaded_media`` root, whose ``<platform>/`` folder serves the
            entries of that platform.

    Raises:
        ValueError: a file is missing, of an unknown format, or malformed (the message
            names the file and the line), or a media folder is missing.
    """
    if isinstance(media_dirs, (str, os.PathLike)):
        media_dirs = [media_dirs]
    folders = MediaFolders(media_dirs)
    readers = {"xml": _read_gamelist, "csv": _read_csv, "jsonl": _read_jsonl}
    entries = []
    for path in catalog_files(catalog):
        for record, media, source in readers[CATALOG_FORMATS[path.suffix.lower()]](path):
            entries.append(_entry(record, media, path, source, folders))
    return entries


def _resolve(folder: Path, image: str) -> str:
    path = Path(image.strip()).expanduser()
    return os.path.normpath(path if path.is_absolute() else folder / path)


def _derived_id(platform: str | None, rom: str | None, name: str) -> str:
    text = rom_stem(rom) if rom else name
    key = title_key(text) or text.strip().lower()
    return f"{platform}/{key}" if platform and key else key


def _entry(
    record: dict, media: list[tuple[str, str]], path: Path, source: str, folders: MediaFolders
) -> CatalogEntry:
    """An entry from a parsed row: ``record`` holds its fields, ``media`` (kind, path) pairs."""
    game_id = "" if record.get("id") is None else str(record["id"]).strip()
    name = str(record.get("name") or "").strip()
    platform = str(record.get("platform") or "").strip() or None
    rom = next((str(record[key]).strip() for key in ROM_KEYS if record.get(key)), None) or None
    found = {}  # image path -> kind; the first kind named wins
    for kind, image in media:
        if image.strip():
            found.setdefault(_resolve(path.parent, image), kind)
    for image in folders.find(path, platform, rom):
        found.setdefault(image.path, image.kind)
    derived = _derived_id(platform, rom, name) if not game_id else ""
    return CatalogEntry(
        game_id=game_id or derived,
        name=name,
        media=tuple(MediaImage(image, kind) for image, kind in found.items()),
        platform=platform,
        rom=rom,
        id_derived=bool(derived),
        metadata={k: v for k, v in record.items() if k not in _OWN_KEYS and v not in ("", None)},
        source=source,
    )


_Row = tuple[dict, list[tuple[str, str]], str]  # fields, (kind, image path) pairs, source


def _parse_gamelist(path: Path) -> ET.Element:
    """The file's <gameList>. ES-DE writes its <alternativeEmulator> beside <gameList>, a
    second root element that XML forbids, so the file is parsed inside a wrapper element."""
    data = path.read_bytes()
    declaration = _XML_DECLARATION.match(data)
    head = declaration.end() if declaration else 0
    doctype = _DOCTYPE.match(data, head)  # stays before the wrapper, where XML allows it
    head = doctype.end() if doctype else head
    # defusedxml refuses entity declarations (billion laughs, external entities) whatever
    # expat the platform links; imported here so that captioning never loads it.
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import DefusedXMLParser

    parser = DefusedXMLParser(forbid_dtd=False, forbid_entities=True, forbid_external=True)
    try:
        for part in (data[:head], b"<gamelist-file>", data[head:], b"</gamelist-file>"):
            parser.feed(part)
        roots = list(parser.close())
    except ET.ParseError as error:
        line, column = error.position
        raise ValueError(f"{path}:{line}:{column}: malformed XML: {error.msg}") from None
    except DefusedXmlException as error:
        raise ValueError(f"{path}: refused XML: {error}") from None
    lists = [root for root in roots if root.tag == "gameList"]
    if not lists:
        found = ", ".join(f"<{root.tag}>" for root in roots) or "no element"
        raise ValueError(f"{path}:1: no <gameList> element; the file holds {found}")
    return lists[0]


def _read_gamelist(path: Path) -> Iterator[_Row]:
    root = _parse_gamelist(path)
    platform = path.parent.name or None  # EmulationStation keeps one folder per system
    for number, game in enumerate(root.iter("game"), start=1):
        fields, media = {"platform": platform}, []
        for child in game:
            text = (child.text or "").strip()
            if child.tag in MEDIA_TAGS:
                media.append((MEDIA_TAGS[child.tag], text))
            elif text:
                fields[_XML_RENAMES.get(child.tag, child.tag)] = text
        fields.update((key, value) for key, value in game.attrib.items() if key != "id")
        fields["id"] = game.get("id", "").strip() or fields.get("id")  # attribute, or <id>
        yield fields, media, f"{path} entry {number}"


def _read_csv(path: Path) -> Iterator[_Row]:
    with open(path, newline="", encoding="utf-8-sig") as stream:  # -sig: Excel writes a BOM
        reader = csv.reader(stream, strict=True)
        try:
            header = [name.strip().lower() for name in next(reader, [])]
            if "name" not in header:
                raise ValueError(
                    f"{path}:1: CSV header lacks the column name; "
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
                media = [
                    (kind, image)
                    for column, kind in MEDIA_TAGS.items()
                    for image in record.get(column, "").split(IMAGE_SEPARATOR)
                ]
                yield record, media, f"{path}:{reader.line_num}"
        except csv.Error as error:
            raise ValueError(f"{path}:{reader.line_num}: malformed CSV: {error}") from None


def _read_jsonl(path: Path) -> Iterator[_Row]:
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
            for key in ("id", "name", "platform", *ROM_KEYS):
                value = record.get(key)
                if isinstance(value, bool) or not isinstance(value, (str, int, type(None))):
                    raise ValueError(f"{path}:{number}: {key!r} must be a string, got {value!r}")
            media = []
            for key, kind in MEDIA_TAGS.items():
                images = record.get(key) or []
                images = [images] if isinstance(images, str) else images
                if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
                    raise ValueError(f"{path}:{number}: {key!r} must be a path or a list of paths")
                media += [(kind, image) for image in images]
            yield record, media, f"{path}:{number}"
