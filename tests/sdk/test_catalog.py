"""Catalogue parsing: EmulationStation gamelists, CSV and JSON Lines into CatalogEntry."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gamelab_caption.catalog import CoverIntake, read_catalog

GAMES = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "games"
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


def test_gamelist_entries_resolve_images_next_to_the_file(tmp_path):
    folder = tmp_path / "snes"
    folder.mkdir()
    (folder / "gamelist.xml").write_text(GAMELIST)
    first, second = read_catalog(folder / "gamelist.xml")
    assert first.game_id == "304" and first.name == "Baseball (USA)"
    assert first.images == (str(folder / "downloaded_images" / "Baseball (USA)-image.jpg"),)
    assert first.platform == "snes"  # EmulationStation: one folder per system
    assert first.metadata["description"] == "Robots play baseball."
    assert first.metadata["genre"] == "Sports" and first.metadata["source"] == "theGamesDB.net"
    assert second.images == () and second.source.endswith("gamelist.xml entry 2")


def test_a_folder_means_every_gamelist_below_it(tmp_path):
    for system in ("snes", "n64"):
        (tmp_path / system).mkdir()
        (tmp_path / system / "gamelist.xml").write_text(GAMELIST)
    entries = read_catalog(tmp_path)
    assert [e.platform for e in entries] == ["n64", "n64", "snes", "snes"]


def test_csv_splits_several_images_and_keeps_other_columns(tmp_path):
    catalog = tmp_path / "games.csv"
    catalog.write_text(
        "\ufeffid,name,image,genre,platform\n"  # Excel's byte-order mark
        '7,"Zelda, A Link",front.png|/abs/back.jpg,Adventure,snes\n'
        "\n"
        "8,Metroid,,,\n",
        encoding="utf-8",
    )
    zelda, metroid = read_catalog(catalog)
    assert zelda.name == "Zelda, A Link" and zelda.platform == "snes"
    assert zelda.images == (str(tmp_path / "front.png"), os.path.normpath("/abs/back.jpg"))
    assert zelda.metadata == {"genre": "Adventure"}
    assert zelda.source == f"{catalog}:2"
    assert metroid.images == () and metroid.platform is None and metroid.metadata == {}


def test_jsonl_takes_one_image_or_a_list(tmp_path):
    catalog = tmp_path / "games.jsonl"
    lines = [
        {"id": 5, "name": "F-Zero", "image": "f.png", "description": "Fast."},
        {"id": "6", "name": "Pilotwings", "image": ["p1.png", "p2.png"], "year": 1990},
    ]
    catalog.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    fzero, pilot = read_catalog(catalog)
    assert fzero.game_id == "5" and fzero.metadata == {"description": "Fast."}
    assert pilot.images == (str(tmp_path / "p1.png"), str(tmp_path / "p2.png"))
    assert pilot.metadata == {"year": 1990}


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "gamelist.xml",
            "<gameList>\n<game id='1'>\n<name>A</nam>\n</gameList>",
            r":3:\d+: malformed XML",
        ),
        ("gamelist.xml", "<games></games>", r":1: root element is <games>"),
        ("games.csv", "id,name\n1,A\n", r":1: CSV header lacks the column\(s\) image"),
        ("games.csv", "id,name,image\n1,A,a.png\n2,B\n", r":3: expected 3 fields, got 2"),
        ("games.csv", 'id,name,image\n1,"A,a.png\n', r":\d+: malformed CSV"),
        ("games.jsonl", '{"id": 1}\n{"id": 2,\n', r":2: malformed JSON"),
        ("games.jsonl", '{"id": 1}\n[1, 2]\n', r":2: expected a JSON object"),
        ("games.jsonl", '{"id": 1, "image": 3}\n', r":1: 'image' must be a path"),
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
    catalog.write_text("id,name,image\n,Anonymous,a.png\n2,Bare,\n3,Known,k.png\n4,New,n.png\n")
    known = {("3", str(tmp_path / "k.png"))}
    intake = CoverIntake(read_catalog(catalog), indexed=known)
    assert intake.covers == [(3, str(tmp_path / "n.png"))]
    report = intake.report(built={3}, images=1)
    assert report.skipped == {"no id": 1, "no image": 1, "already indexed": 1}
    assert report.entries == 4 and report.built == 1 and len(report.problems) == 3


@pytest.mark.skipif(not GAMES.is_dir(), reason="the game catalogue ../shared/data/games is absent")
def test_real_catalogue_has_5735_entries_of_3105_games():
    entries = read_catalog(GAMES)
    assert len(entries) == 5735
    assert len({entry.game_id for entry in entries}) == 3105
    assert {entry.platform for entry in entries} == {"snes", "megadrive", "n64"}
    assert sum(not entry.images for entry in entries) == 12
