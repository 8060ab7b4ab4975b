"""Catalogue parsing: gamelist dialects, CSV, JSON Lines and media folders into CatalogEntry."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from gamelab_caption.catalog import (
    MEDIA_KINDS,
    MEDIA_TAGS,
    BuildReport,
    CatalogEntry,
    MediaImage,
    MediaIntake,
    read_catalog,
    retroarch_label,
)

GAMES = Path(__file__).resolve().parents[3] / "shared" / "data" / "games"  # ../shared from the repo
NO_GAMES = "the game catalogue ../shared/data/games is absent"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "catalogs"
GAMELIST = """<?xml version="1.0"?>
<gameList>
  <game id="304" source="theGamesDB.net">
    <path>./Baseball (USA).zip</path>
    <name>Baseball (USA)</name>
    <desc>Robots play baseball.</desc>
    <image>./downloaded_images/Baseball (USA)-image.jpg</image>
    <genre>Sports</genre>
  </game>
  <game id="12">
    <name>No Cover (Japan)</name>
  </game>
</gameList>
"""
ESDE_FOLDERS = {
    "covers": "cover",
    "backcovers": "back_cover",
    "screenshots": "screenshot",
    "titlescreens": "title_screen",
    "marquees": "logo",
    "physicalmedia": "physical",
    "fanart": "fan_art",
    "miximages": "mix",
}


def _gamelist(folder: Path, fixture: str) -> Path:
    """The fixture gamelist copied to ``folder/gamelist.xml`` (the folder names the system)."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(FIXTURES / fixture, folder / "gamelist.xml"))


def _touch(folder: Path, *names: str) -> list[str]:
    """Empty files: reading a catalogue lists media folders but never opens an image."""
    paths = []
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        paths.append(str(path))
    return paths


def _kinds(entry: CatalogEntry) -> dict[str, str]:
    return {os.path.basename(image.path): image.kind for image in entry.media}


def test_gamelist_entries_resolve_images_next_to_the_file(tmp_path):
    folder = tmp_path / "snes"
    folder.mkdir()
    (folder / "gamelist.xml").write_text(GAMELIST)
    first, second = read_catalog(folder / "gamelist.xml")
    assert first.game_id == "304" and first.name == "Baseball (USA)" and not first.id_derived
    cover = str(folder / "downloaded_images" / "Baseball (USA)-image.jpg")
    assert first.media == (MediaImage(cover, "cover"),) and first.images == (cover,)
    assert first.platform == "snes"  # EmulationStation: one folder per system
    assert first.rom == "./Baseball (USA).zip"
    assert first.metadata == {
        "description": "Robots play baseball.",
        "genre": "Sports",
        "source": "theGamesDB.net",
    }
    assert second.media == () and second.rom is None
    assert second.source.endswith("gamelist.xml entry 2")


def test_a_folder_means_every_gamelist_below_it(tmp_path):
    for system in ("snes", "n64"):
        (tmp_path / system).mkdir()
        (tmp_path / system / "gamelist.xml").write_text(GAMELIST)
    entries = read_catalog(tmp_path)
    assert [e.platform for e in entries] == ["n64", "n64", "snes", "snes"]


@pytest.mark.parametrize(
    ("fixture", "game_id", "id_derived"),
    [("batocera.xml", "1234", False), ("id_child.xml", "5678", False)],
)
def test_gamelist_id_is_an_attribute_or_a_child(tmp_path, fixture, game_id, id_derived):
    entry = read_catalog(_gamelist(tmp_path / "megadrive", fixture))[0]
    assert (entry.game_id, entry.id_derived) == (game_id, id_derived)
    assert "id" not in entry.metadata


def test_gamelist_without_ids_derives_them_from_system_and_rom(tmp_path):
    gamelist = _gamelist(tmp_path / "megadrive", "esde.xml")  # also two root elements
    entries = read_catalog(gamelist)
    assert [(e.game_id, e.id_derived) for e in entries] == [
        ("megadrive/foo", True),  # Foo (USA).zip and Foo (Europe).zip: one game
        ("megadrive/foo", True),
        ("megadrive/foo bar and baz", True),
        ("megadrive/foo 2", True),  # a ROM in a subfolder: its file name counts
        ("megadrive/unreleased foo", True),  # no ROM path: the name
        ("", False),  # neither: MediaIntake skips it for "no id"
    ]
    assert entries[0].metadata["genre"] == "Action" and entries[0].rom == "./Foo (USA).zip"
    assert read_catalog(gamelist) == entries  # stable: the same ids on every read
    empty_id = read_catalog(_gamelist(tmp_path / "md", "batocera.xml"))[1]
    assert (empty_id.game_id, empty_id.id_derived) == ("md/columns", True)


def test_derived_id_has_no_prefix_when_the_platform_is_unknown(tmp_path):
    catalog = tmp_path / "games.csv"
    catalog.write_text('name,rom\nAlex Kidd,"roms/Alex Kidd in Miracle World (USA, Europe).zip"\n')
    (entry,) = read_catalog(catalog)
    assert (entry.game_id, entry.id_derived) == ("alex kidd in miracle world", True)


def test_every_gamelist_media_tag_gives_its_kind(tmp_path):
    sonic, columns = read_catalog(_gamelist(tmp_path / "megadrive", "batocera.xml"))
    images = tmp_path / "megadrive" / "images"
    assert sonic.media == tuple(
        MediaImage(str(images / f"sonic-{tag}.png"), kind) for tag, kind in MEDIA_TAGS.items()
    )
    assert set(MEDIA_TAGS.values()) == set(MEDIA_KINDS)
    assert sonic.metadata["video"] == "./videos/sonic-video.mp4"  # not an image: metadata
    assert columns.media == (MediaImage(str(images / "columns-image.png"), "cover"),)  # once


@pytest.mark.parametrize(
    ("gamelists", "media"),
    [
        ("ES-DE/gamelists/megadrive", "ES-DE/downloaded_media/megadrive"),  # ES-DE's own
        ("megadrive", "megadrive/downloaded_media/megadrive"),
        ("megadrive", "megadrive/downloaded_media"),
    ],
)
def test_esde_downloaded_media_next_to_the_catalogue_is_found(tmp_path, gamelists, media):
    gamelist = _gamelist(tmp_path / gamelists, "esde.xml")
    media = tmp_path / media
    _touch(media, *(f"{folder}/Foo (USA).png" for folder in ESDE_FOLDERS))
    _touch(media, "covers/Foo (Europe).jpg", "covers/Foo (Europe).png", "covers/Foo (USA).txt")
    _touch(media, "screenshots/Foo (Europe).JPG", "covers/Hacks/Foo II (USA) (Hack).webp")
    _touch(media, "covers/Foo: Bar & Baz (USA).gif", "unknown/Foo (USA).png")
    usa, europe, colon, hack, no_rom, _ = read_catalog(gamelist)
    assert [image.kind for image in usa.media] == list(ESDE_FOLDERS.values())
    assert all(image.path.startswith(str(media)) for image in usa.media)
    assert europe.media == (  # .png before .jpg; the extension's case does not matter
        MediaImage(str(media / "covers" / "Foo (Europe).png"), "cover"),
        MediaImage(str(media / "screenshots" / "Foo (Europe).JPG"), "screenshot"),
    )
    assert colon.images == (str(media / "covers" / "Foo: Bar & Baz (USA).gif"),)
    assert hack.images == (str(media / "covers" / "Hacks" / "Foo II (USA) (Hack).webp"),)
    assert no_rom.media == ()  # media folders match ROM names only


@pytest.mark.parametrize("given", ["root", "system folder"])
def test_esde_media_given_explicitly(tmp_path, given):
    root = tmp_path / "media" / "downloaded_media"
    _touch(root / "megadrive", "covers/Foo (USA).png", "titlescreens/Foo (Europe).png")
    megadrive = _gamelist(tmp_path / "roms" / "megadrive", "esde.xml")
    snes = _gamelist(tmp_path / "roms" / "snes", "esde.xml")
    folder = root if given == "root" else root / "megadrive"
    entries = read_catalog([megadrive, snes], media_dirs=[folder])
    assert _kinds(entries[0]) == {"Foo (USA).png": "cover"}
    assert _kinds(entries[1]) == {"Foo (Europe).png": "title_screen"}
    snes_media = [image for entry in entries[6:] for image in entry.media]
    # a root's <platform>/ folder serves that platform; a folder of kind folders serves all
    assert len(snes_media) == (0 if given == "root" else 2)


def test_libretro_thumbnails_next_to_the_catalogue_and_given(tmp_path):
    system = tmp_path / "mastersystem"
    gamelist = _gamelist(system, "esde.xml")
    _touch(system, "Named_Boxarts/Foo (USA).png", "Named_Logos/Foo (USA).png")
    thumbnails = tmp_path / "thumbnails" / "Sega - Master System - Mark III"
    _touch(thumbnails, "Named_Snaps/Foo (USA).png", "Named_Titles/Foo_ Bar _ Baz (USA).jpg")
    _touch(thumbnails, "Named_Titles/Foo: Bar & Baz (USA).png")  # not RetroArch's label
    usa, europe, colon, *_ = read_catalog(gamelist, media_dirs=str(thumbnails))
    assert [(Path(image.path).parent.name, image.kind) for image in usa.media] == [
        ("Named_Boxarts", "cover"),
        ("Named_Logos", "logo"),
        ("Named_Snaps", "screenshot"),
    ]
    assert europe.media == usa.media  # another region: the libretro images of its title
    # RetroArch's label first; a file of the same title but another spelling only after it
    assert colon.media[0] == MediaImage(
        str(thumbnails / "Named_Titles" / "Foo_ Bar _ Baz (USA).jpg"), "title_screen"
    )


@pytest.mark.parametrize(
    ("rom", "label"),
    [
        ("./Foo: Bar & Baz (USA).zip", "Foo_ Bar _ Baz (USA)"),
        ('roms/Q*bert? "Deluxe" <1|2> `x`.7z', "Q_bert_ _Deluxe_ _1_2_ _x_"),
        ("Super Mario Bros. 3 (USA).nes", "Super Mario Bros. 3 (USA)"),
        ("./Game Folder", "Game Folder"),
    ],
)
def test_retroarch_label_replaces_what_retroarch_replaces(rom, label):
    assert retroarch_label(rom) == label


def test_each_media_folder_is_listed_once_per_read(tmp_path, monkeypatch):
    gamelist = _gamelist(tmp_path / "megadrive", "esde.xml")
    _touch(tmp_path / "megadrive", "downloaded_media/covers/Foo (USA).png")
    _touch(tmp_path / "megadrive", "Named_Snaps/Foo (Europe).png", "Named_Titles/x.png")
    listed = Counter()
    walk = os.walk

    def counting_walk(folder, *args, **kwargs):
        listed[folder] += 1
        return walk(folder, *args, **kwargs)

    monkeypatch.setattr(os, "walk", counting_walk)  # how media.py lists a folder
    entries = read_catalog([gamelist, gamelist])  # 12 entries, 3 kind folders
    assert len(entries) == 12 and sorted(listed.values()) == [1, 1, 1]
    # Foo (USA) has its ES-DE cover and the Europe snap (libretro: the same title)
    assert [len(entry.media) for entry in entries[:2]] == [2, 1]


def test_a_missing_media_folder_is_an_error(tmp_path):
    gamelist = _gamelist(tmp_path / "megadrive", "esde.xml")
    with pytest.raises(ValueError, match="Media folder not found: .*absent"):
        read_catalog(gamelist, media_dirs=[tmp_path / "absent"])


def test_csv_reads_media_columns_and_keeps_other_columns(tmp_path):
    catalog = tmp_path / "games.csv"
    catalog.write_text(
        "\ufeffid,name,image,screenshot,path,genre,platform\n"  # Excel's byte-order mark
        '7,"Zelda, A Link",front.png|/abs/back.jpg,shot.png,./Zelda (USA).sfc,Adventure,snes\n'
        "\n"
        "8,Metroid,,,,,\n",
        encoding="utf-8",
    )
    zelda, metroid = read_catalog(catalog)
    assert zelda.name == "Zelda, A Link" and zelda.platform == "snes"
    assert zelda.media == (
        MediaImage(str(tmp_path / "front.png"), "cover"),
        MediaImage(os.path.normpath("/abs/back.jpg"), "cover"),
        MediaImage(str(tmp_path / "shot.png"), "screenshot"),
    )
    assert zelda.metadata == {"genre": "Adventure"} and zelda.rom == "./Zelda (USA).sfc"
    assert zelda.source == f"{catalog}:2"
    assert metroid.media == () and metroid.platform is None and metroid.metadata == {}


def test_csv_needs_only_a_name(tmp_path):
    catalog = tmp_path / "games.csv"
    catalog.write_text("name,rom,platform\nFoo,./Foo (USA).zip,nes\nBar,,\n")
    foo, bar = read_catalog(catalog)
    assert (foo.game_id, foo.rom, foo.id_derived) == ("nes/foo", "./Foo (USA).zip", True)
    assert (bar.game_id, bar.rom, bar.media) == ("bar", None, ())


def test_jsonl_takes_one_image_or_a_list(tmp_path):
    catalog = tmp_path / "games.jsonl"
    lines = [
        {"id": 5, "name": "F-Zero", "image": "f.png", "description": "Fast."},
        {
            "name": "Pilotwings",
            "rom": "./Pilotwings (USA).sfc",
            "platform": "snes",
            "image": ["p1.png", "p2.png"],
            "fanart": "art.jpg",
            "year": 1990,
        },
    ]
    catalog.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    fzero, pilot = read_catalog(catalog)
    assert fzero.game_id == "5" and fzero.metadata == {"description": "Fast."}
    assert [(os.path.basename(i.path), i.kind) for i in pilot.media] == [
        ("p1.png", "cover"),
        ("p2.png", "cover"),
        ("art.jpg", "fan_art"),
    ]
    assert (pilot.game_id, pilot.rom, pilot.metadata) == (
        "snes/pilotwings",
        "./Pilotwings (USA).sfc",
        {"year": 1990},
    )


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "gamelist.xml",
            "<gameList>\n<game id='1'>\n<name>A</nam>\n</gameList>",
            r":3:\d+: malformed XML",
        ),
        ("gamelist.xml", "<games></games>", r":1: no <gameList> element; the file holds <games>"),
        ("gamelist.xml", "", r":1: no <gameList> element; the file holds no element"),
        ("games.csv", "id,title\n1,A\n", r":1: CSV header lacks the column name"),
        ("games.csv", "id,name,image\n1,A,a.png\n2,B\n", r":3: expected 3 fields, got 2"),
        ("games.csv", 'id,name,image\n1,"A,a.png\n', r":\d+: malformed CSV"),
        ("games.jsonl", '{"id": 1}\n{"id": 2,\n', r":2: malformed JSON"),
        ("games.jsonl", '{"id": 1}\n[1, 2]\n', r":2: expected a JSON object"),
        ("games.jsonl", '{"id": 1, "image": 3}\n', r":1: 'image' must be a path"),
        ("games.jsonl", '{"id": 1, "mix": [3]}\n', r":1: 'mix' must be a path"),
        ("games.jsonl", '{"id": 1, "path": ["a.zip"]}\n', r":1: 'path' must be a string"),
    ],
)
def test_malformed_file_names_file_and_line(tmp_path, name, text, message):
    catalog = tmp_path / name
    catalog.write_text(text)
    with pytest.raises(ValueError, match=f"^{catalog}{message}"):
        read_catalog(catalog)


def test_unknown_format_lists_the_known_ones(tmp_path):
    catalog = tmp_path / "games.txt"
    catalog.write_text("id,name,image\n")
    with pytest.raises(ValueError, match=r"Unknown catalogue format '.txt'.*\.xml, \.csv, \.jsonl"):
        read_catalog(catalog)
    with pytest.raises(ValueError, match="Catalogue file not found"):
        read_catalog(tmp_path / "absent.csv")


def test_intake_sorts_out_entries_without_id_or_image(tmp_path):
    catalog = tmp_path / "games.csv"
    catalog.write_text("id,name,image\n,,a.png\n2,Bare,\n3,Known,k.png\n4,New,n.png\n")
    known = {("3", str(tmp_path / "k.png"))}
    intake = MediaIntake(read_catalog(catalog), indexed=known)
    assert intake.media == [(3, MediaImage(str(tmp_path / "n.png"), "cover"))]
    report = intake.report(built={3}, images=1, kinds={"cover": 1})
    assert report.skipped == {"no id": 1, "no image": 1, "already indexed": 1}
    assert report.entries == 4 and report.built == 1 and len(report.problems) == 3
    assert report.kinds == {"cover": 1}


def test_intake_counts_each_bad_image_and_keeps_the_entry_s_others(tmp_path):
    Image.new("RGB", (8, 8), (200, 30, 30)).save(tmp_path / "cover.png")
    (tmp_path / "title.png").write_bytes(b"not an image")
    catalog = tmp_path / "games.csv"
    catalog.write_text("id,name,screenshot,titleshot,image\n1,Red,gone.png,title.png,cover.png\n")
    intake = MediaIntake(read_catalog(catalog))
    assert [image.kind for _, image in intake.media] == ["cover", "screenshot", "title_screen"]
    opened = [intake.open(position, image) for position, image in intake.media]
    assert opened[0].mode == "RGB" and opened[0].size == (8, 8) and opened[1:] == [None, None]
    report = intake.report(built={0}, images=1, kinds={"cover": 1, "screenshot": 0})
    assert report.skipped == {"missing image": 1, "corrupt image": 1}
    assert (report.built, report.images, report.kinds) == (1, 1, {"cover": 1})
    assert "missing image (screenshot)" in report.problems[0] and "gone.png" in report.problems[0]
    assert "corrupt image (title_screen)" in report.problems[1]


def test_build_reports_add_up_kinds_and_skips():
    first = BuildReport(1, 1, 2, kinds={"cover": 1, "logo": 1}, skipped={"no image": 1})
    second = BuildReport(2, 1, 1, kinds={"cover": 1}, skipped={"missing image": 2})
    total = first + second
    assert (total.entries, total.built, total.images) == (3, 2, 3)
    assert total.kinds == {"cover": 2, "logo": 1}
    assert total.skipped == {"no image": 1, "missing image": 2}


def test_plain_paths_given_as_media_are_covers():
    entry = CatalogEntry("12", "Purple Rain", ("purple.png",))
    assert entry.media == (MediaImage("purple.png", "cover"),)


def test_entries_survive_a_json_round_trip(tmp_path):
    entries = read_catalog(_gamelist(tmp_path / "megadrive", "batocera.xml"))
    entries += read_catalog(_gamelist(tmp_path / "snes", "esde.xml"))
    for entry in entries:
        assert CatalogEntry.from_dict(json.loads(json.dumps(entry.to_dict()))) == entry
    assert entries[0].to_dict()["media"][0] == {
        "path": str(tmp_path / "megadrive" / "images" / "sonic-image.png"),
        "kind": "cover",
    }


def _entry_dict(**changes) -> dict:
    data = CatalogEntry("1", "A", (MediaImage("a.png", "logo"),), rom="./A.zip").to_dict()
    return {key: value for key, value in {**data, **changes}.items() if value != "DROP"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (["1", "A"], "must be an object, got list"),
        (_entry_dict(media="DROP"), "lacks media and has unknown key"),
        (_entry_dict(images=["a.png"]), "lacks nothing and has unknown key.*images"),
        (_entry_dict(game_id=1), "'game_id' must be str, got int"),
        (_entry_dict(platform=5), "'platform' must be str or null, got int"),
        (_entry_dict(id_derived="yes"), "'id_derived' must be bool, got str"),
        (_entry_dict(media="a.png"), "'media' must be list or tuple, got str"),
        (_entry_dict(media=["a.png"]), r"media\[0\] must be an object with keys path and kind"),
        (_entry_dict(media=[{"path": "a.png"}]), r"media\[0\] must be an object with keys"),
        (_entry_dict(media=[{"path": "a.png", "kind": "boxart"}]), "Unknown media kind 'boxart'"),
        (_entry_dict(media=[{"path": 3, "kind": "cover"}]), "path must be a string"),
        (_entry_dict(metadata=[]), "'metadata' must be dict, got list"),
    ],
)
def test_malformed_entry_dicts_are_rejected(data, message):
    with pytest.raises(ValueError, match=message):
        CatalogEntry.from_dict(data)


@pytest.mark.skipif(not GAMES.is_dir(), reason=NO_GAMES)
def test_real_catalogue_has_6218_entries_of_3431_games_in_four_systems():
    entries = read_catalog(GAMES)
    systems = {
        platform: (count, len({e.game_id for e in entries if e.platform == platform}))
        for platform, count in Counter(entry.platform for entry in entries).items()
    }
    assert systems == {  # system: (entries, game ids)
        "snes": (3258, 1777),
        "megadrive": (1628, 992),
        "n64": (849, 336),
        "mastersystem": (483, 326),
    }
    assert len(entries) == 6218 and len({entry.game_id for entry in entries}) == 3431
    assert not any(entry.id_derived for entry in entries)
    assert sum(not entry.media for entry in entries) == 12
    assert {image.kind for entry in entries for image in entry.media} == {"cover"}


@pytest.mark.skipif(not GAMES.is_dir(), reason=NO_GAMES)
def test_real_libretro_thumbnails_attach_to_the_master_system_catalogue():
    libretro = GAMES / "libretro" / "Sega - Master System - Mark III"
    entries = read_catalog(GAMES / "mastersystem" / "gamelist.xml", media_dirs=[libretro])
    with_kind = Counter(
        (image.kind, "libretro" if image.path.startswith(str(libretro)) else "gamelist")
        for entry in entries
        for image in entry.media
    )
    assert len(entries) == 483
    assert with_kind == {
        ("cover", "gamelist"): 483,
        ("cover", "libretro"): 753,
        ("screenshot", "libretro"): 972,
        ("title_screen", "libretro"): 905,
    }
    # labels equal to the ROM's file name (as in RetroArch) or of the same title (its other
    # regional dumps, e.g. "(Rev 1)" where the catalogue has the original)
    assert sum(any(str(libretro) in image.path for image in e.media) for e in entries) == 469


@pytest.mark.parametrize(
    "doctype",
    [
        '<!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>',  # laughs
        '<!DOCTYPE l [<!ENTITY a SYSTEM "file:///etc/passwd">]>',  # an external entity
    ],
)
def test_entity_declarations_are_refused(tmp_path, doctype):
    folder = tmp_path / "snes"
    folder.mkdir()
    (folder / "gamelist.xml").write_text(
        f'<?xml version="1.0"?>\n{doctype}\n'
        '<gameList><game id="1"><name>&b;</name><image>a.png</image></game></gameList>\n'
    )
    with pytest.raises(ValueError, match=r"gamelist.xml: refused XML: EntitiesForbidden"):
        read_catalog(folder / "gamelist.xml")


def test_a_plain_doctype_is_accepted(tmp_path):
    folder = tmp_path / "snes"
    folder.mkdir()
    (folder / "gamelist.xml").write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE gameList>\n<gameList><game id="7"><name>A</name>'
        "</game></gameList>\n"
    )
    assert [entry.game_id for entry in read_catalog(folder / "gamelist.xml")] == ["7"]
