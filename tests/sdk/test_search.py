"""GameIndex on the tiny bundle, whose embedding is an image's mean colour.

Covers are solid colours, so a query of one colour must find the game of that colour.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from gamelab_caption import BundleError, Captioner, GameHit, GameIndex, ImageError
from gamelab_caption.bundle import MANIFEST, write_manifest
from gamelab_caption.catalog import CatalogEntry
from gamelab_caption.cli import main

COVERS = {
    "red": (230, 20, 20),
    "red_jp": (220, 30, 25),  # the Japanese release's cover: a slightly other red
    "blue": (20, 20, 230),
    "green": (20, 230, 20),
    "yellow": (230, 230, 20),
    "purple": (150, 20, 200),
}
GAMELIST = """<gameList>
  <game id="1"><name>Red Quest (USA)</name><image>./covers/red.png</image>
    <genre>Action</genre></game>
  <game id="1"><name>Red Quest (Japan)</name><image>./covers/red_jp.jpg</image></game>
  <game id="2"><name>Blue Racer</name><image>./covers/blue.png</image></game>
  <game id="3"><name>Broken Box</name><image>./covers/corrupt.jpg</image></game>
  <game id="4"><name>No Cover</name></game>
  <game id="5"><name>Lost Cover</name><image>./covers/lost.png</image></game>
  <game><name>Nameless Id</name><image>./covers/blue.png</image></game>
</gameList>
"""


@pytest.fixture()
def catalog_dir(tmp_path) -> Path:
    """snes/gamelist.xml (dirty), games.csv and games.jsonl, covers under snes/covers/."""
    covers = tmp_path / "snes" / "covers"
    covers.mkdir(parents=True)
    for name, rgb in COVERS.items():
        suffix = ".jpg" if name == "red_jp" else ".png"
        Image.new("RGB", (40, 56), rgb).save(covers / f"{name}{suffix}")
    (covers / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    (tmp_path / "snes" / "gamelist.xml").write_text(GAMELIST)
    (tmp_path / "games.csv").write_text(
        "id,name,image,platform,genre\n10,Green Hill,snes/covers/green.png,megadrive,Platform\n"
    )
    (tmp_path / "games.jsonl").write_text(
        json.dumps({"id": 11, "name": "Yellow Sub", "image": ["snes/covers/yellow.png"]}) + "\n"
    )
    return tmp_path


@pytest.fixture()
def index(captioner, catalog_dir) -> GameIndex:
    catalogs = [catalog_dir / "snes" / "gamelist.xml", catalog_dir / "games.csv"]
    return GameIndex.build([*catalogs, catalog_dir / "games.jsonl"], captioner=captioner)


def _query(tmp_path: Path, rgb) -> Path:
    path = tmp_path / f"query-{'-'.join(map(str, rgb))}.jpg"
    Image.new("RGB", (64, 48), rgb).save(path, quality=90)
    return path


def test_search_finds_the_game_of_the_same_colour_in_every_format(index, tmp_path):
    for rgb, game_id in [((225, 25, 25), "1"), ((20, 230, 25), "10"), ((228, 228, 30), "11")]:
        best = index.search(_query(tmp_path, rgb), k=1)[0]
        assert isinstance(best, GameHit)
        assert best.game_id == game_id and best.score > 0.99


def test_regional_releases_sharing_an_id_count_once(index, tmp_path):
    hits = index.search(_query(tmp_path, (225, 25, 22)), k=10)
    assert [hit.game_id for hit in hits][:1] == ["1"]
    assert sorted(hit.game_id for hit in hits) == ["1", "10", "11", "2"]  # all games, once each
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
    assert len(index) == 4


def test_hit_names_the_matched_release_its_image_and_metadata(index, catalog_dir):
    covers = catalog_dir / "snes" / "covers"
    hit = index.search(covers / "red.png", k=1)[0]
    assert (hit.name, hit.platform, hit.image) == (
        "Red Quest (USA)",
        "snes",
        str(covers / "red.png"),
    )
    assert hit.metadata == {"genre": "Action"}
    hit = index.search(np.asarray(Image.open(covers / "green.png")), k=1)[0]  # an array works too
    assert (hit.name, hit.platform, hit.metadata) == (
        "Green Hill",
        "megadrive",
        {"genre": "Platform"},
    )


def test_dirty_entries_are_skipped_counted_and_logged(captioner, catalog_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="gamelab_caption"):
        index = GameIndex.build(catalog_dir / "snes" / "gamelist.xml", captioner=captioner)
    report = index.report
    assert report.skipped == {"no id": 1, "no image": 1, "missing image": 1, "corrupt image": 1}
    assert (report.entries, report.built, report.images) == (7, 3, 3)
    assert any("corrupt.jpg" in line and "corrupt image" in line for line in report.problems)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 4


def test_malformed_catalogue_is_an_error_naming_file_and_line(captioner, tmp_path):
    gamelist = tmp_path / "gamelist.xml"
    gamelist.write_text("<gameList>\n  <game id='1'>\n    <name>A</game>\n</gameList>\n")
    with pytest.raises(ValueError, match=rf"^{gamelist}:3:\d+: malformed XML"):
        GameIndex.build(gamelist, captioner=captioner, progress=False)


def test_save_and_load_round_trip(index, captioner, catalog_dir, tmp_path):
    path = index.save(tmp_path / "games.idx")
    assert path == tmp_path / "games.idx" and not list(tmp_path.glob("*.part"))
    loaded = GameIndex.load(path, captioner=captioner)
    query = _query(tmp_path, (20, 25, 220))
    assert loaded.search(query, k=3) == index.search(query, k=3)
    assert loaded.report == index.report and not loaded.whitened
    with np.load(path, allow_pickle=False) as data:  # plain arrays: safe to load
        assert set(data.files) == {"vectors", "meta"}


def test_load_refuses_an_index_built_with_another_encoder(index, tiny_bundle, tmp_path):
    other = tmp_path / "other_bundle"
    shutil.copytree(tiny_bundle, other)
    encoder = onnx.load(other / "encoder.onnx")
    onnx.helper.set_model_props(encoder, {"retrained": "yes"})  # same graph, other bytes
    onnx.save(encoder, other / "encoder.onnx")
    manifest = json.loads((other / MANIFEST).read_text())
    write_manifest(
        other, {k: v for k, v in manifest.items() if k not in ("files", "format_version")}
    )
    path = index.save(tmp_path / "games.idx")
    with pytest.raises(
        BundleError, match=r"built with bundle 'tiny' \(encoder sha256 [0-9a-f]{12}"
    ):
        GameIndex.load(path, captioner=Captioner(other))


def test_load_rejects_a_file_that_is_not_an_index(tmp_path, captioner):
    bogus = tmp_path / "games.idx"
    bogus.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="is not a game index"):
        GameIndex.load(bogus, captioner=captioner)
    with pytest.raises(ValueError, match="Index file not found"):
        GameIndex.load(tmp_path / "absent.idx", captioner=captioner)


def test_add_extends_and_skips_what_is_already_indexed(captioner, catalog_dir, tmp_path):
    index = GameIndex.build(catalog_dir / "games.csv", captioner=captioner, progress=False)
    assert index.search(_query(tmp_path, (140, 25, 205)), k=1)[0].game_id == "10"
    added = index.add([catalog_dir / "games.jsonl", catalog_dir / "games.csv"], progress=False)
    assert (added.entries, added.built, added.skipped) == (2, 1, {"already indexed": 1})
    assert len(index) == 2 and index.report.built == 2
    # entries can be added directly, too
    purple = CatalogEntry("12", "Purple Rain", (str(catalog_dir / "snes/covers/purple.png"),))
    index.add([purple], progress=False)
    assert index.search(_query(tmp_path, (140, 25, 205)), k=1)[0].name == "Purple Rain"


def test_progress_callback_sees_every_image(captioner, catalog_dir):
    calls = []
    GameIndex.build(
        catalog_dir / "snes" / "gamelist.xml",
        captioner=captioner,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls[-1] == (5, 5)  # red, red_jp, blue, corrupt, lost: every image is tried


def test_bad_queries_and_arguments(index, image_files, captioner):
    with pytest.raises(ImageError):
        index.search(image_files["corrupt"])
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search(image_files["red"], k=0)
    with pytest.raises(ValueError, match="Invalid backend 'annoy', expected one of: exact, hnsw"):
        GameIndex(captioner, backend="annoy")
    assert GameIndex(captioner).search(image_files["red"]) == []  # empty index: no hits


def test_hnsw_backend_finds_what_exact_search_finds(index, captioner, tmp_path):
    pytest.importorskip("faiss")
    path = index.save(tmp_path / "games.idx")
    approximate = GameIndex.load(path, captioner=captioner, backend="hnsw")
    for rgb in COVERS.values():
        query = _query(tmp_path, rgb)
        assert [h.game_id for h in approximate.search(query, k=4)] == [
            h.game_id for h in index.search(query, k=4)
        ]


def test_cli_builds_an_index_and_searches_it_as_json(tiny_bundle, catalog_dir, tmp_path, capsys):
    output = tmp_path / "games.idx"
    catalogs = [str(catalog_dir / "snes" / "gamelist.xml"), str(catalog_dir / "games.csv")]
    model = ["--model", str(tiny_bundle)]
    assert main(["index", "build", *catalogs, "-o", str(output), "--quiet", *model]) == 0
    summary = capsys.readouterr().out
    assert summary.startswith(f"{output}: 3 games, 4 of 8 entries, 4 images; skipped: ")
    assert "1 corrupt image" in summary and "1 no image" in summary

    query = str(_query(tmp_path, (240, 10, 10)))
    assert main(["search", query, "--index", str(output), "--k", "2", "--json", *model]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["image"] == query and record["caption"] == "red ball"
    assert [hit["game_id"] for hit in record["hits"]] == ["1", "10"]
    assert set(record["hits"][0]) == {"game_id", "name", "score", "platform", "image", "metadata"}

    assert main(["search", query, "--index", str(output), *model]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{query}\tred ball"
    assert re.fullmatch(r"  1\. 0\.99\d  Red Quest \(USA\)  \[snes, id 1\]", lines[1])


def test_cli_errors_are_one_line_with_exit_code_2(tiny_bundle, tmp_path, capsys):
    assert (
        main(
            [
                "index",
                "build",
                str(tmp_path / "absent.csv"),
                "-o",
                "x.idx",
                "--model",
                str(tiny_bundle),
            ]
        )
        == 2
    )
    assert main(["index", "rebuild"]) == 2
    assert (
        main(
            [
                "search",
                "q.jpg",
                "--index",
                str(tmp_path / "absent.idx"),
                "--model",
                str(tiny_bundle),
            ]
        )
        == 2
    )
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 3 and "Catalogue file not found" in errors[0]
    assert "Index file not found" in errors[2]


def test_no_progress_bar_and_no_error_without_tqdm(captioner, catalog_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import now raises ImportError
    index = GameIndex.build(catalog_dir / "games.csv", captioner=captioner)
    assert len(index) == 1 and capsys.readouterr().err == ""


def test_an_entry_with_one_good_image_is_built_and_the_bad_one_noted(captioner, catalog_dir):
    catalog = catalog_dir / "mixed.csv"
    catalog.write_text(
        "id,name,image\n20,Two Covers,snes/covers/corrupt.jpg|snes/covers/blue.png\n"
    )
    index = GameIndex.build(catalog, captioner=captioner, progress=False)
    assert (index.report.built, index.report.images, index.report.skipped) == (1, 1, {})
    assert len(index.report.problems) == 1 and "corrupt image" in index.report.problems[0]
