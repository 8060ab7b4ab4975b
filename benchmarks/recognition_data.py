"""Queries of every kind a player has, drawn from the Master System data, with their answers.

The catalogue is ``games/mastersystem/gamelist.xml`` (recalbox covers) with the libretro
thumbnails of those games as further media (other box scans, screenshots, title screens).
A query image is never in the index it is run against: every image drawn as a query is
taken out of the catalogue's media first (the catalogue keeps the game's other media, e.g.
the title screen of another regional release). Kinds:

- ``box_scan``: another scan of the box (a libretro box art).
- ``box_photo``: a simulated phone photo of the catalogue's own cover (bench_photos, strong).
- ``title_screen``: a libretro title screen.
- ``screenshot``: a libretro gameplay screenshot of a game that keeps another screenshot in
  the catalogue (regional releases often differ).
- ``screenshot_covers_only``: the same screenshots, against the catalogue's covers only.

Answers are game ids: a libretro label belongs to the catalogue entry whose ROM has that
RetroArch label, else to the entry of the same ``title_key`` (another regional dump).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from bench_photos import photograph

from gamelab_caption.catalog import CatalogEntry, read_catalog
from gamelab_caption.media import MediaImage, retroarch_label
from gamelab_caption.preprocessing import load_image
from gamelab_caption.titles import title_key

GAMES_DIR = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "games").resolve()
LIBRETRO = GAMES_DIR / "libretro" / "Sega - Master System - Mark III"
FOLDERS = {"box_scan": "Named_Boxarts", "title_screen": "Named_Titles", "screenshot": "Named_Snaps"}
KINDS = ("box_scan", "box_photo", "title_screen", "screenshot", "screenshot_covers_only")
PHOTO_LEVEL = "strong"


@dataclass(frozen=True)
class Query:
    """One query: what it shows, its answer, and the image (a path, or JPEG bytes)."""

    kind: str
    game_id: str
    image: str | bytes
    source: str  # the file it is, or was photographed from


@dataclass(frozen=True)
class RecognitionSet:
    """Catalogues without the query images, and the queries."""

    full: list[CatalogEntry]  # every media kind, query images taken out
    covers: list[CatalogEntry]  # the gamelist covers only: today's catalogue
    queries: dict[str, list[Query]]


def available() -> bool:
    return (GAMES_DIR / "mastersystem" / "gamelist.xml").is_file() and LIBRETRO.is_dir()


def answer_of(entries: list[CatalogEntry]):
    """A function: libretro image path -> game id, or None when no entry is that game."""
    by_label, by_title = {}, {}
    for entry in entries:
        if entry.rom:
            by_label.setdefault(retroarch_label(entry.rom), entry.game_id)
            by_title.setdefault(title_key(retroarch_label(entry.rom)), entry.game_id)

    def answer(path: str) -> str | None:
        label = Path(path).stem
        return by_label.get(label) or by_title.get(title_key(label))

    return answer


def draw(seed: int, per_kind: int, games: int | None = None) -> RecognitionSet:
    """Draw up to ``per_kind`` queries of each kind, one per game, all from ``seed``.

    ``games`` keeps only that many games of the catalogue, drawn at random (quick runs).
    """
    rng = np.random.default_rng(seed)
    entries = read_catalog(GAMES_DIR / "mastersystem" / "gamelist.xml", media_dirs=[LIBRETRO])
    if games is not None:
        ids = sorted({entry.game_id for entry in entries})
        kept = set(np.random.default_rng(seed + 1).choice(ids, min(games, len(ids)), replace=False))
        entries = [entry for entry in entries if entry.game_id in kept]
    answer = answer_of(entries)
    libretro = str(LIBRETRO)
    gamelist_covers = {
        entry.game_id: [m.path for m in entry.media if not m.path.startswith(libretro)]
        for entry in entries
    }
    queries: dict[str, list[Query]] = {}
    held_out: set[str] = set()
    for kind, folder in FOLDERS.items():
        by_game: dict[str, list[str]] = {}
        for path in sorted((LIBRETRO / folder).iterdir()):
            game = answer(str(path))
            if game is not None:
                by_game.setdefault(game, []).append(str(path))
        if kind == "screenshot":  # only games that keep another, different screenshot
            by_game = {g: paths for g, paths in by_game.items() if len(paths) >= 2}
        games = sorted(by_game)
        chosen = rng.choice(games, min(per_kind, len(games)), replace=False)
        picked = [(game, by_game[game][rng.integers(len(by_game[game]))]) for game in chosen]
        queries[kind] = [Query(kind, game, path, path) for game, path in picked]
        held_out.update(path for _, path in picked)
    queries["screenshot_covers_only"] = [
        replace(query, kind="screenshot_covers_only") for query in queries["screenshot"]
    ]
    with_covers = sorted(game for game, covers in gamelist_covers.items() if covers)
    chosen = rng.choice(with_covers, min(per_kind, len(with_covers)), replace=False)
    photos = []
    for game in chosen:
        cover = gamelist_covers[game][0]
        clutter = gamelist_covers[with_covers[rng.integers(len(with_covers))]][0]
        try:
            image = photograph(load_image(cover), PHOTO_LEVEL, rng, load_image(clutter))
        except ValueError:  # an unreadable cover in the catalogue: no query of it
            continue
        photos.append(Query("box_photo", game, image, cover))
    queries["box_photo"] = photos
    full = [_without(entry, held_out) for entry in entries]
    covers = [
        replace(entry, media=tuple(m for m in entry.media if not m.path.startswith(libretro)))
        for entry in entries
    ]
    return RecognitionSet(full, covers, {kind: queries[kind] for kind in KINDS})


def _without(entry: CatalogEntry, paths: set[str]) -> CatalogEntry:
    media: tuple[MediaImage, ...] = tuple(m for m in entry.media if m.path not in paths)
    return replace(entry, media=media)
