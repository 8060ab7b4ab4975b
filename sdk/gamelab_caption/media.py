"""Media folders: find a game's images by file name, as ES-DE and RetroArch lay them out.

A gamelist names at most a few images in its tags; scrapers keep the rest in folders that
no catalogue lists, named after the ROM. ES-DE writes
``downloaded_media/<system>/<kind folder>/<ROM stem>.<ext>`` (mirroring ROM subfolders) and
keeps its gamelists two levels away, in ``gamelists/<system>/``. RetroArch reads
libretro-thumbnails from ``Named_Boxarts/<label>.png`` and its siblings, where the label is
the ROM's file name without extension, with characters unsafe in file names replaced.

So images are found by listing folders, and each folder is listed once per read into a
dict: a real thumbnail folder holds thousands of files, and a stat per entry, kind and
extension would multiply that.

Opening the images for an index (``MediaIntake``) is here too: with several images per
entry, one may be missing or corrupt while the others are fine, so images, not entries,
are what it counts and skips.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ImageError
from .preprocessing import DEFAULT_MAX_PIXELS, load_image
from .titles import title_key

if TYPE_CHECKING:
    from .catalog import CatalogEntry  # catalog.py imports this module, not the reverse

MEDIA_KINDS = (
    "cover",
    "back_cover",
    "screenshot",
    "title_screen",
    "logo",
    "physical",
    "fan_art",
    "mix",
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")  # preferred first, if a name has two
ESDE_FOLDERS = {  # ES-DE's folder in downloaded_media/<system>/ -> kind
    "covers": "cover",
    "backcovers": "back_cover",
    "screenshots": "screenshot",
    "titlescreens": "title_screen",
    "marquees": "logo",
    "physicalmedia": "physical",
    "fanart": "fan_art",
    "miximages": "mix",
}
LIBRETRO_FOLDERS = {  # libretro-thumbnails' folder -> kind
    "Named_Boxarts": "cover",
    "Named_Snaps": "screenshot",
    "Named_Titles": "title_screen",
    "Named_Logos": "logo",
}
ESDE_ROOT = "downloaded_media"
SKIP_REASONS = ("no id", "no image", "already indexed", "missing image", "corrupt image")
_LABEL_UNSAFE = re.compile(r'[&*/:`<>?\\|"]')  # RetroArch replaces each with "_"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MediaImage:
    """One image of a catalogue entry.

    Attributes:
        path: the image file, resolved (relative to the working folder if the catalogue was).
        kind: what it shows, one of MEDIA_KINDS.

    Raises:
        ValueError: ``kind`` is not one of MEDIA_KINDS, or ``path`` is not a string.
    """

    path: str
    kind: str

    def __post_init__(self):
        if not isinstance(self.path, str):
            raise ValueError(f"Image path must be a string, got {self.path!r}")
        if self.kind not in MEDIA_KINDS:
            raise ValueError(
                f"Unknown media kind {self.kind!r}, expected one of: {', '.join(MEDIA_KINDS)}"
            )


def rom_stem(rom: str) -> str:
    """The ROM's file name without its extension: ``./sub/Foo (USA).zip`` -> ``Foo (USA)``.

    Gamelists write "/" on every system, so only "/" separates folders.
    """
    name = rom.strip().rstrip("/").rsplit("/", 1)[-1]
    stem, dot, _ = name.rpartition(".")
    return stem if dot and stem else name


def retroarch_label(rom_path: str) -> str:
    """The name RetroArch gives a ROM's thumbnails, without the image extension.

    Args:
        rom_path: the ROM path as a catalogue gives it, e.g. ``./Foo: Bar & Baz (USA).zip``.

    Returns:
        The file name without extension, each of ``&*/:`<>?\\|"`` replaced by ``_``:
        ``Foo_ Bar _ Baz (USA)``.
    """
    return _LABEL_UNSAFE.sub("_", rom_stem(rom_path))


def _esde_key(rom: str) -> str:
    """ES-DE mirrors a ROM's subfolders under each media folder: ``./a/Foo.zip`` -> ``a/Foo``."""
    path = posixpath.normpath(rom.strip())
    folder = posixpath.dirname(path)
    if path.startswith(("/", "..")) or folder in ("", "."):
        return rom_stem(rom)  # outside the system's ROM folder: ES-DE uses the name alone
    return f"{folder}/{rom_stem(rom)}"


def _image_files(folder: str, recursive: bool) -> dict[str, str]:
    """Key (file path below ``folder`` without extension, "/"-separated) -> image path."""
    files: dict[str, tuple[int, str]] = {}  # key -> (suffix preference, path)
    for parent, subfolders, names in os.walk(folder):
        if not recursive:
            subfolders.clear()
        below = os.path.relpath(parent, folder).replace(os.sep, "/")
        for name in names:
            stem, suffix = os.path.splitext(name)
            if suffix.lower() not in IMAGE_SUFFIXES:
                continue
            key = stem if below == "." else f"{below}/{stem}"
            found = (IMAGE_SUFFIXES.index(suffix.lower()), os.path.join(parent, name))
            files[key] = min(files.get(key, found), found)
    return {key: path for key, (_, path) in files.items()}


class MediaFolders:
    """The media folders of one read, each listed once, and the images they hold per entry.

    A media folder holds kind folders directly (ES-DE's ``covers``, ``screenshots``, ... or
    libretro's ``Named_Boxarts``, ...). Searched for an entry of catalogue ``<dir>/<file>``
    and platform ``<p>``, in order: ``<dir>/downloaded_media/<p>``, ``<dir>/downloaded_media``,
    ``<dir>/../../downloaded_media/<p>`` (ES-DE keeps ``gamelists/<p>/gamelist.xml``),
    ``<dir>``, then each explicit folder and its ``<p>`` subfolder (an ES-DE
    ``downloaded_media`` root). A folder that does not exist holds nothing.

    Args:
        folders: explicit media folders, searched for every entry.

    Raises:
        ValueError: an explicit folder does not exist.
    """

    def __init__(self, folders: Iterable[str | os.PathLike] = ()):
        self._explicit = [os.path.normpath(folder) for folder in folders]
        for folder in self._explicit:
            if not os.path.isdir(folder):
                raise ValueError(f"Media folder not found: {folder}")
        self._listed: dict[str, list[tuple[str, bool, dict[str, str]]]] = {}
        self._searched: dict[tuple[str, str | None], list[str]] = {}
        self._by_title: dict[int, dict[str, list[str]]] = {}

    def find(self, catalog: Path, platform: str | None, rom: str | None) -> list[MediaImage]:
        """The images named after ``rom`` in the media folders of an entry of ``catalog``."""
        if not rom or not rom_stem(rom):
            return []
        keys = {True: _esde_key(rom), False: retroarch_label(rom)}
        title = title_key(rom_stem(rom))
        images = []
        for folder in self._folders(catalog, platform):
            for kind, is_esde, files in self._listing(folder):
                path = files.get(keys[is_esde])
                if path is not None:
                    images.append(MediaImage(path, kind))
                if not is_esde and title:
                    # libretro names thumbnails after every regional dump: "(Rev 1)", "(Japan)"
                    # are the same game, and the catalogue's dump is often not among them
                    same = self._titles(files).get(title, [])
                    images += [MediaImage(other, kind) for other in same if other != path]
        return images

    def _titles(self, files: dict[str, str]) -> dict[str, list[str]]:
        """title_key -> image paths of a libretro kind folder, computed once per folder."""
        found = self._by_title.get(id(files))
        if found is None:
            found = {}
            for label, path in sorted(files.items()):
                found.setdefault(title_key(label), []).append(path)
            self._by_title[id(files)] = found
        return found

    def _folders(self, catalog: Path, platform: str | None) -> list[str]:
        here = os.path.dirname(os.path.normpath(catalog)) or "."
        if (here, platform) not in self._searched:
            folders = [os.path.join(here, ESDE_ROOT, platform)] if platform else []
            folders.append(os.path.join(here, ESDE_ROOT))
            if platform:
                folders.append(os.path.join(here, os.pardir, os.pardir, ESDE_ROOT, platform))
            folders.append(here)
            for folder in self._explicit:
                folders += [folder, os.path.join(folder, platform)] if platform else [folder]
            self._searched[here, platform] = list(dict.fromkeys(map(os.path.normpath, folders)))
        return self._searched[here, platform]

    def _listing(self, folder: str) -> list[tuple[str, bool, dict[str, str]]]:
        """(kind, is ES-DE, key -> image path) for each kind folder in ``folder``."""
        if folder not in self._listed:
            try:
                names = {entry.name for entry in os.scandir(folder) if entry.is_dir()}
            except OSError:  # absent or unreadable: a candidate, not a promise
                names = set()
            layouts = [(ESDE_FOLDERS, True), (LIBRETRO_FOLDERS, False)]
            self._listed[folder] = [
                (kind, is_esde, _image_files(os.path.join(folder, name), recursive=is_esde))
                for kinds, is_esde in layouts
                for name, kind in kinds.items()
                if name in names
            ]
        return self._listed[folder]


@dataclass(frozen=True)
class BuildReport:
    """What went into an index.

    Attributes:
        entries: catalogue entries read.
        built: entries indexed with at least one image.
        images: images embedded.
        kinds: media kind (one of MEDIA_KINDS) -> images of it embedded.
        skipped: reason (one of SKIP_REASONS) -> how many were left out for it: entries for
            "no id", "no image" and "already indexed"; images for "missing image" and
            "corrupt image" (the entry's other images are still indexed).
        problems: one line per entry or image left out, naming its source.
    """

    entries: int = 0
    built: int = 0
    images: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    def __add__(self, other: BuildReport) -> BuildReport:
        return BuildReport(
            entries=self.entries + other.entries,
            built=self.built + other.built,
            images=self.images + other.images,
            kinds=dict(Counter(self.kinds) + Counter(other.kinds)),
            skipped=dict(Counter(self.skipped) + Counter(other.skipped)),
            problems=self.problems + other.problems,
        )


class MediaIntake:
    """Sort entries into images to open, and count and log what cannot be used.

    Args:
        entries: the entries to take in.
        indexed: (game_id, image path) pairs already indexed; they are not taken again.

    Attributes:
        media: (entry position, image) of every image to open, in catalogue order.
    """

    def __init__(self, entries: Iterable[CatalogEntry], indexed: Collection = frozenset()):
        self.entries = list(entries)
        self.media: list[tuple[int, MediaImage]] = []
        self._skipped: Counter = Counter()
        self._problems: list[str] = []
        taken = set(indexed)  # a game's image is indexed once, whichever release lists it
        for position, entry in enumerate(self.entries):
            new = [image for image in entry.media if (entry.game_id, image.path) not in taken]
            taken.update((entry.game_id, image.path) for image in new)
            if not entry.game_id:
                self._note(entry, "no id")
            elif not entry.media:
                self._note(entry, "no image")
            elif not new:
                self._note(entry, "already indexed")
            else:
                self.media += [(position, image) for image in new]

    def _note(self, entry: CatalogEntry, reason: str, detail: str = "") -> None:
        where = entry.source or entry.name
        self._skipped[reason] += 1
        self._problems.append(f"{where}: {reason}{detail}")
        logger.warning("Skipped %s: %s%s", where, reason, detail)

    def open(self, position: int, image: MediaImage, max_pixels: int = DEFAULT_MAX_PIXELS):
        """The image as RGB, or None once noted as missing or corrupt.

        Args:
            position: the entry's position in ``entries``.
            image: one of that entry's images, as listed in ``media``.
            max_pixels: larger images are refused as corrupt (decompression-bomb guard).
        """
        entry = self.entries[position]
        if not os.path.isfile(image.path):
            self._note(entry, "missing image", f" ({image.kind}) {image.path}")
            return None
        try:
            return load_image(image.path, max_pixels=max_pixels)
        except ImageError as error:
            self._note(entry, "corrupt image", f" ({image.kind}): {error}")
            return None

    def unusable(self, position: int, image: MediaImage, error: str, missing: bool) -> None:
        """Note an image that another process (a batch job) found missing or corrupt, as
        ``open`` notes it here.

        Args:
            position: the entry's position in ``entries``.
            image: one of that entry's images, as listed in ``media``.
            error: what was wrong with it (the ImageError's message).
            missing: the file does not exist.
        """
        entry = self.entries[position]
        if missing:
            self._note(entry, "missing image", f" ({image.kind}) {image.path}")
        else:
            self._note(entry, "corrupt image", f" ({image.kind}): {error}")

    def report(
        self, built: Collection[int], images: int, kinds: Mapping[str, int] | None = None
    ) -> BuildReport:
        """The report once every image was opened.

        Args:
            built: positions of the entries indexed.
            images: images embedded.
            kinds: media kind -> images of it embedded.
        """
        return BuildReport(
            entries=len(self.entries),
            built=len(built),
            images=images,
            kinds={kind: n for kind, n in (kinds or {}).items() if n},
            skipped={reason: n for reason, n in self._skipped.items() if n},
            problems=tuple(self._problems),
        )
