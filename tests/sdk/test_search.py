"""GameIndex on the tiny bundle, whose embedding is an image's mean colour, and the fusion of
image and text evidence on the shipped encoder.

Covers are solid colours, so a query of one colour must find the game of that colour; its
image evidence (``hit.evidence[0].score``) is then a cosine near 1. ``hit.score`` is a fused
confidence whose weights are re-fitted from time to time (``search.CALIBRATION``,
``search.RUNNERS_UP``), so these tests check ranking, evidence and what a confidence must
be (a chance: the games of one result sum to at most 1), never its exact value.
"""

from __future__ import annotations

import io
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

from gamelab_caption import (
    BundleError,
    Captioner,
    GameHit,
    GameIndex,
    ImageError,
    bundled_models,
    search,
)
from gamelab_caption.bundle import MANIFEST, write_manifest
from gamelab_caption.catalog import MEDIA_KINDS, CatalogEntry, MediaImage
from gamelab_caption.cli import main
from gamelab_caption.errors import IndexFileError
from gamelab_caption.ocr import brightest_channel

COVERS = {
    "red": (230, 20, 20),
    "red_jp": (220, 30, 25),  # the Japanese release's cover: a slightly other red
    "blue": (20, 20, 230),
    "green": (20, 230, 20),
    "yellow": (230, 230, 20),
    "purple": (150, 20, 200),
}
UNSCRAPED = "snes/unscraped quest"  # derived from the system and the ROM's name: no id given
GAMELIST = """<gameList>
  <game id="1"><name>Red Quest (USA)</name><image>./covers/red.png</image>
    <genre>Action</genre></game>
  <game id="1"><name>Red Quest (Japan)</name><image>./covers/red_jp.jpg</image></game>
  <game id="2"><name>Blue Racer</name><image>./covers/blue.png</image></game>
  <game id="3"><name>Broken Box</name><image>./covers/corrupt.jpg</image></game>
  <game id="4"><name>No Cover</name></game>
  <game id="5"><name>Lost Cover</name><image>./covers/lost.png</image></game>
  <game><path>./Unscraped Quest (USA).sfc</path><name>Unscraped Quest</name>
    <image>./covers/purple.png</image></game>
  <game><image>./covers/blue.png</image></game>
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
    return _build([*catalogs, catalog_dir / "games.jsonl"], captioner)


def _build(catalog, captioner, **options) -> GameIndex:
    """An index without OCR (fast) and without a progress bar, unless asked."""
    options = {"progress": False, "read_text": False, **options}
    return GameIndex.build(catalog, captioner=captioner, **options)


def _query(tmp_path: Path, rgb) -> Path:
    path = tmp_path / f"query-{'-'.join(map(str, rgb))}.jpg"
    Image.new("RGB", (64, 48), rgb).save(path, quality=90)
    return path


def test_search_finds_the_game_of_the_same_colour_in_every_format(index, tmp_path):
    games = [((225, 25, 25), "1"), ((20, 230, 25), "10"), ((228, 228, 30), "11")]
    for rgb, game_id in [*games, ((148, 22, 198), UNSCRAPED)]:
        best, second = index.search(_query(tmp_path, rgb), k=2)
        assert isinstance(best, GameHit) and best.game_id == game_id
        (evidence,) = best.evidence  # no text read: image evidence alone
        assert (evidence.source, evidence.kind, evidence.image) == ("image", "cover", best.image)
        assert evidence.score > 0.99  # the same colour: a cosine near 1
        assert 0.0 < second.score < best.score < 1.0  # a confidence, the better match higher
        assert second.evidence[0].score < evidence.score


def test_regional_releases_sharing_an_id_count_once(index, tmp_path):
    hits = index.search(_query(tmp_path, (225, 25, 22)), k=10)
    assert [hit.game_id for hit in hits][:1] == ["1"]
    all_games = ["1", "10", "11", "2", UNSCRAPED]
    assert sorted(hit.game_id for hit in hits) == all_games  # all games, once each
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
    assert len(index) == 5


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
        index = _build(catalog_dir / "snes" / "gamelist.xml", captioner)
    report = index.report
    assert report.skipped == {"no id": 1, "no image": 1, "missing image": 1, "corrupt image": 1}
    assert (report.entries, report.built, report.images) == (8, 4, 4)
    assert report.kinds == {"cover": 4}
    assert any("corrupt.jpg" in line and "corrupt image" in line for line in report.problems)
    assert any("lost.png" in line and "missing image" in line for line in report.problems)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 4
    assert len(index) == 3  # red (two releases), blue, and the unscraped one


def test_an_entry_without_id_is_indexed_under_a_derived_id(captioner, catalog_dir, tmp_path):
    index = _build(catalog_dir / "snes" / "gamelist.xml", captioner)
    hit = index.search(_query(tmp_path, (150, 20, 200)), k=1)[0]
    assert (hit.game_id, hit.name, hit.platform) == (UNSCRAPED, "Unscraped Quest", "snes")
    assert hit.image == str(catalog_dir / "snes" / "covers" / "purple.png")
    # the entry without id, ROM path or name shares blue.png, but is not indexed
    blue = index.search(_query(tmp_path, (20, 20, 230)), k=10)
    assert [hit.game_id for hit in blue][0] == "2" and "" not in {hit.game_id for hit in blue}


def test_each_media_kind_is_indexed_counted_and_named_by_the_hit(captioner, catalog_dir, tmp_path):
    catalog = catalog_dir / "kinds.csv"
    catalog.write_text(
        "id,name,image,screenshot,titleshot\n"
        "30,Many Kinds,snes/covers/red.png,snes/covers/blue.png,snes/covers/green.png\n"
        "31,Yellow Only,snes/covers/yellow.png,,\n"
    )
    index = _build(catalog, captioner)
    assert index.report.kinds == {"cover": 2, "screenshot": 1, "title_screen": 1}
    covers = catalog_dir / "snes" / "covers"
    assert [(image.path, image.kind, image.text) for image in index.images] == [
        (str(covers / "red.png"), "cover", ""),
        (str(covers / "blue.png"), "screenshot", ""),
        (str(covers / "green.png"), "title_screen", ""),  # read_text=False: nothing read
        (str(covers / "yellow.png"), "cover", ""),
    ]
    for rgb, kind, image in [
        ((20, 20, 225), "screenshot", "blue"),
        ((25, 225, 20), "title_screen", "green"),
    ]:
        hit = index.search(_query(tmp_path, rgb), k=1)[0]
        assert (hit.game_id, hit.image) == ("30", str(covers / f"{image}.png"))
        assert hit.evidence[0].kind == kind and kind in hit.reason


def test_malformed_catalogue_is_an_error_naming_file_and_line(captioner, tmp_path):
    gamelist = tmp_path / "gamelist.xml"
    gamelist.write_text("<gameList>\n  <game id='1'>\n    <name>A</game>\n</gameList>\n")
    with pytest.raises(ValueError, match=rf"^{gamelist}:3:\d+: malformed XML"):
        _build(gamelist, captioner)


def test_save_and_load_round_trip(index, captioner, catalog_dir, tmp_path):
    path = index.save(tmp_path / "games.idx")
    assert path == tmp_path / "games.idx" and not list(tmp_path.glob("*.part"))
    loaded = GameIndex.load(path, captioner=captioner, read_text=False)
    assert loaded.images == index.images and len(loaded) == len(index)
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
    with pytest.raises(IndexFileError, match="is not a game index"):
        GameIndex.load(bogus, captioner=captioner)
    with pytest.raises(IndexFileError, match="Index file not found"):
        GameIndex.load(tmp_path / "absent.idx", captioner=captioner)
    assert issubclass(IndexFileError, ValueError)  # callers catching ValueError still do


def test_add_extends_and_skips_what_is_already_indexed(captioner, catalog_dir, tmp_path):
    index = _build(catalog_dir / "games.csv", captioner)
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
    _build(
        catalog_dir / "snes" / "gamelist.xml",
        captioner,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls[-1] == (6, 6)  # red, red_jp, blue, corrupt, lost, purple: every image is tried


def test_bad_queries_and_arguments(index, image_files, captioner):
    with pytest.raises(ImageError):
        index.search(image_files["corrupt"])
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search(image_files["red"], k=0)
    with pytest.raises(ValueError, match="Invalid backend 'annoy', expected one of: exact, hnsw"):
        GameIndex(captioner, backend="annoy")
    assert GameIndex(captioner, read_text=False).search(image_files["red"]) == []  # no hits


def test_hnsw_backend_finds_what_exact_search_finds(index, captioner, tmp_path):
    pytest.importorskip("faiss")
    path = index.save(tmp_path / "games.idx")
    approximate = GameIndex.load(path, captioner=captioner, backend="hnsw", read_text=False)
    for rgb in COVERS.values():
        query = _query(tmp_path, rgb)
        assert [h.game_id for h in approximate.search(query, k=4)] == [
            h.game_id for h in index.search(query, k=4)
        ]


def test_cli_builds_an_index_and_searches_it_as_json(
    tiny_bundle, catalog_dir, tmp_path, capsys, monkeypatch
):
    output = tmp_path / "games.idx"
    catalogs = [str(catalog_dir / "snes" / "gamelist.xml"), str(catalog_dir / "games.csv")]
    model = ["--model", str(tiny_bundle)]
    assert main(["index", "build", *catalogs, "-o", str(output), "--quiet", *model]) == 0
    summary = capsys.readouterr().out
    assert summary.startswith(f"{output}: 4 games, 5 of 9 entries, 5 images")
    skipped = summary.split("skipped: ")[1].strip()
    assert skipped == "1 corrupt image, 1 missing image, 1 no id, 1 no image"

    query = str(_query(tmp_path, (240, 10, 10)))
    assert main(["search", query, "--index", str(output), "--k", "2", "--json", *model]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["image"] == query and record["caption"] == "red ball"
    assert [hit["game_id"] for hit in record["hits"]] == ["1", UNSCRAPED]
    keys = {"game_id", "name", "score", "platform", "image", "metadata", "evidence"}
    assert keys <= set(record["hits"][0]) and 0 < record["hits"][0]["score"] < 1
    assert [(e["source"], e["kind"]) for e in record["hits"][0]["evidence"]] == [("image", "cover")]

    assert main(["search", query, "--index", str(output), "-k", "1", *model]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0] == f"{query}\tred ball"
    assert re.match(r"  1\. 0\.\d{3}  Red Quest \(USA\)  \[snes, id 1\]", lines[1])

    with open(query, "rb") as piped:  # `... | gamelab-caption search - --index FILE`
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(piped))
        assert main(["search", "-", "--index", str(output), "-k", "1", *model]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "-\tred ball" and "Red Quest (USA)" in lines[1]


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
    index = GameIndex.build(catalog_dir / "games.csv", captioner=captioner, read_text=False)
    assert len(index) == 1 and capsys.readouterr().err == ""


def test_an_entry_with_one_good_image_is_built_and_the_bad_one_noted(captioner, catalog_dir):
    catalog = catalog_dir / "mixed.csv"
    catalog.write_text(
        "id,name,image\n20,Two Covers,snes/covers/corrupt.jpg|snes/covers/blue.png\n"
    )
    index = _build(catalog, captioner)
    report = index.report
    assert (report.built, report.images, report.skipped) == (1, 1, {"corrupt image": 1})
    assert len(report.problems) == 1 and "corrupt image (cover)" in report.problems[0]
    assert "corrupt.jpg" in report.problems[0]
    hit = index.search(catalog_dir / "snes" / "covers" / "blue.png", k=1)[0]
    assert (hit.game_id, hit.image) == ("20", str(catalog_dir / "snes" / "covers" / "blue.png"))


# Fusion of image and text evidence, on the shipped encoder: covers of blocky noise all look
# alike to it (cosines ~0.98), so the text read decides between them.
FUSION_NAMES = (
    "Phantasy Star II (Japan)",
    "Alex Kidd in Miracle World (USA, Europe)",
    "Golvellius - Valley of Doom (USA, Europe)",
    "Wonder Boy in Monster Land (USA, Europe)",
    "Fantasy Zone (World)",
)


@pytest.fixture(scope="module")
def shipped_captioner() -> Captioner:
    if not bundled_models():
        pytest.skip("no model bundle in this checkout")
    return Captioner(threads=2)


@pytest.fixture(scope="module")
def lookalikes(shipped_captioner, tmp_path_factory) -> tuple[GameIndex, list[Path]]:
    """Five games whose covers are blocks of random colour; ids "0".."4"."""
    pytest.importorskip("rapidfuzz", reason="text matching needs rapidfuzz (the ocr extra)")
    folder = tmp_path_factory.mktemp("lookalikes")
    rng = np.random.default_rng(0)
    entries, covers = [], []
    for number, name in enumerate(FUSION_NAMES):
        blocks = rng.integers(0, 256, (14, 10, 3), dtype=np.uint8)  # (H, W, 3)
        covers.append(folder / f"{number}.png")
        Image.fromarray(blocks).resize((160, 224), Image.NEAREST).save(covers[-1])
        media = (MediaImage(str(covers[-1]), "cover"),)
        entries.append(CatalogEntry(str(number), name, media, platform="mastersystem"))
    return _build(entries, shipped_captioner), covers


def test_without_text_the_visual_best_ranks_first(lookalikes):
    index, covers = lookalikes
    views = index.embed(covers[0], crops=(1.0,))  # game 0's own cover
    hits = index.search_embedding(views, k=5)
    assert [hit.game_id for hit in hits][0] == "0" and len(hits) == 5
    assert all(len(hit.evidence) == 1 and hit.evidence[0].source == "image" for hit in hits)
    image_scores = [hit.evidence[0].score for hit in hits]
    assert image_scores[0] > 0.99 and image_scores == sorted(image_scores, reverse=True)
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
    # text that names no game changes no one's standing
    unread = index.search_embedding(views, k=5, text=["ZQXV WKPJ", "PUSH START BUTTON"])
    assert [hit.game_id for hit in unread] == [hit.game_id for hit in hits]
    assert all(len(hit.evidence) == 1 for hit in unread)


def test_text_naming_a_game_ranks_it_first_over_better_image_evidence(lookalikes):
    index, covers = lookalikes
    views = index.embed(covers[0], crops=(1.0,))
    visual = {hit.game_id: hit.evidence[0].score for hit in index.search_embedding(views, k=5)}
    for text in (["GOLVELLIUS", "PUSH START BUTTON"], "Golvellius"):
        best, *rest = index.search_embedding(views, k=5, text=text)
        assert best.game_id == "2" and best.name == FUSION_NAMES[2]
        image, read = best.evidence
        assert image.source == "image" and image.score == pytest.approx(visual["2"])
        assert image.score < visual["0"]  # its image evidence is weaker than game 0's
        assert (read.source, read.kind, read.read, read.matched) == (
            "text",
            "name",
            "golvellius",
            FUSION_NAMES[2],
        )
        assert read.image is None and 0 < read.score <= 1
        assert 'read "golvellius"' in best.reason and "Golvellius - Valley of Doom" in best.reason
        assert all(len(hit.evidence) == 1 for hit in rest)  # no text evidence for the others
        assert all(hit.score < best.score for hit in rest)


def test_the_confidences_of_a_result_sum_to_at_most_one(lookalikes):
    # two games named by the read were both "near certain" when each hit's chance was
    # computed on its own
    index, covers = lookalikes
    views = index.embed(covers[0], crops=(1.0,))
    two_names = ["FANTASY ZONE", "PHANTASY STAR II"]
    for text in ((), ["GOLVELLIUS"], two_names):
        hits = index.search_embedding(views, k=5, text=text)
        scores = [hit.score for hit in hits]
        assert scores == sorted(scores, reverse=True) and 0 < scores[-1]
        assert sum(scores) <= 1.0 + 1e-9, (text, scores)
    first, second, *_ = index.search_embedding(views, k=5, text=two_names)
    assert len(first.evidence) == len(second.evidence) == 2  # text evidence for both
    assert second.score <= 1 - first.score


def test_confidences_give_the_top_game_its_calibrated_chance_and_the_others_a_share():
    assert search.confidences([], True) == []
    scores = [2.0, 1.9, 1.2, 0.3]
    chances = search.confidences(scores, True)
    assert chances[0] == search.confidence(2.0, 0.1, True)
    assert chances == sorted(chances, reverse=True) and sum(chances) <= 1.0
    assert all(0 < chance < 1 - chances[0] for chance in chances[1:])
    weak = search.confidences([0.05, 0.049, 0.0], False)  # a photo of no game it knows
    assert weak == sorted(weak, reverse=True) and weak[0] < 0.5
    crowded = search.confidences([1.0] * 1000, False)  # a thousand ties still share one chance
    assert sum(crowded) == pytest.approx(1.0) and crowded[2] == pytest.approx(crowded[-1])


def test_text_proposes_games_the_image_evidence_does_not(lookalikes, monkeypatch):
    index, covers = lookalikes
    monkeypatch.setattr(search, "VISUAL_CANDIDATES", 1)  # the image proposes game 0 alone
    views = index.embed(covers[0], crops=(1.0,))
    assert [hit.game_id for hit in index.search_embedding(views, k=1)] == ["0"]
    (hit,) = index.search_embedding(views, k=1, text=["WONDER BOY", "IN MONSTER LAND"])
    assert hit.game_id == "3" and hit.evidence[1].matched == FUSION_NAMES[3]


def test_a_query_that_looks_like_gameplay_needs_a_stronger_text_match(
    lookalikes, shipped_captioner
):
    from gamelab_caption.text_search import MIN_SCORE, similarity

    index, covers = lookalikes
    # the same images as screenshots: every query's nearest catalogue images are screenshots
    shots = [
        CatalogEntry(str(number), name, (MediaImage(str(cover), "screenshot"),))
        for number, (name, cover) in enumerate(zip(FUSION_NAMES, covers, strict=True))
    ]
    gameplay = _build(shots, shipped_captioner)
    weak, strong = ["KIDD MIRACLE"], ["ALEX KIDD IN MIRACLE WORLD"]
    weak_score = similarity("kidd miracle", "alex kidd in miracle world")
    assert MIN_SCORE <= weak_score < search.GAMEPLAY_MIN_TEXT
    for built, read, names_it in (
        (index, weak, True),
        (gameplay, weak, False),  # score lines and dialogue misread as names: not enough
        (gameplay, strong, True),
    ):
        views = built.embed(covers[0], crops=(1.0,))
        hits = built.search_embedding(views, k=5, text=read)
        assert (hits[0].game_id == "1") is names_it, read
        assert any(item.source == "text" for hit in hits for item in hit.evidence) is names_it


def test_a_query_that_looks_like_a_title_screen_lets_its_text_outweigh_a_larger_image_gap(
    captioner, tmp_path
):
    # solid colours on the tiny encoder (embedding: the mean colour): the query is nearer
    # Red Quest's image than Golvellius's, by more than SURE_GAP but less than TITLE_SURE_GAP
    colours = {"red": (200, 40, 40), "golvellius": (100, 200, 200)}
    names = {"red": "Red Quest (USA)", "golvellius": "Golvellius (USA)"}
    for name, colour in colours.items():
        Image.new("RGB", (32, 32), colour).save(tmp_path / f"{name}.png")
    query = Image.new("RGB", (32, 32), (210, 45, 35))
    read = ["GOLVELLIUS", "PUSH START BUTTON"]
    best = {}
    for kind in ("cover", "title_screen"):
        entries = [
            CatalogEntry(
                game_id, names[game_id], (MediaImage(str(tmp_path / f"{game_id}.png"), kind),)
            )
            for game_id in colours
        ]
        index = _build(entries, captioner)
        views = index.embed(query, crops=(1.0,))
        visual = [hit.evidence[0].score for hit in index.search_embedding(views, k=2)]
        assert search.SURE_GAP <= visual[0] - visual[1] < search.TITLE_SURE_GAP, visual
        best[kind] = index.search_embedding(views, k=2, text=read)[0]
    assert best["cover"].game_id == "red"  # a cover this much closer is sure: a read is noise
    assert best["title_screen"].game_id == "golvellius"  # title screens look alike: text decides
    assert best["title_screen"].evidence[1].matched == "Golvellius (USA)"


def test_a_strong_read_outweighs_an_image_just_short_of_sure(captioner, tmp_path):
    # the query is nearer Red Quest's cover than Golvellius's by just under SURE_GAP: the
    # image is unsure, so the read is weighed, at least UNSURE_TEXT_WEIGHT
    colours = {"red": (200, 40, 40), "golvellius": (100, 200, 200)}
    names = {"red": "Red Quest (USA)", "golvellius": "Golvellius (USA)"}
    entries = []
    for game_id, colour in colours.items():
        Image.new("RGB", (32, 32), colour).save(tmp_path / f"{game_id}.png")
        media = (MediaImage(str(tmp_path / f"{game_id}.png"), "cover"),)
        entries.append(CatalogEntry(game_id, names[game_id], media))
    index = _build(entries, captioner)
    views = index.embed(Image.new("RGB", (32, 32), (200, 60, 60)), crops=(1.0,))
    visual = [hit.evidence[0].score for hit in index.search_embedding(views, k=2)]
    gap = visual[0] - visual[1]
    # so near the sure gap that the boost alone would give a perfect read less than the gap
    assert search.TEXT_BOOST * (search.SURE_GAP - gap) < gap < search.SURE_GAP, visual
    assert index.search_embedding(views, k=2)[0].game_id == "red"
    best = index.search_embedding(views, k=2, text=["GOLVELLIUS", "PUSH START BUTTON"])[0]
    assert best.game_id == "golvellius" and best.evidence[1].matched == "Golvellius (USA)"


def test_k_beyond_the_visual_candidates_still_returns_k_games(captioner, tmp_path):
    count = search.VISUAL_CANDIDATES + 2
    entries = []
    for number in range(count):
        path = tmp_path / f"{number}.png"
        Image.new("RGB", (8, 8), (200, 4 * number, 255 - 4 * number)).save(path)
        entries.append(CatalogEntry(str(number), f"Game {number}", (str(path),)))
    index = _build(entries, captioner)
    assert len(index) == count
    assert len(index.search(_query(tmp_path, (200, 60, 195)), k=count)) == count


def _title_screen(draw_screen, title: str, background=(12, 16, 48), y: int = 80):
    return draw_screen([(title, 40, y), ("PUSH START BUTTON", 14, 170, "white")], background)


def _letters(text: str) -> str:
    """Upper-case letters only: the reader may drop or keep spaces."""
    return "".join(character for character in text.upper() if character.isalpha())


def test_title_screens_are_read_at_build_and_their_text_finds_the_game(
    captioner, tmp_path, draw_screen
):
    pytest.importorskip("rapidocr", reason="the ocr extra is not installed")
    assert "title_screen" in search.READ_KINDS
    unread_kind = next(kind for kind in MEDIA_KINDS if kind not in search.READ_KINDS)
    titles = {"chaos": "SONIC CHAOS", "golvellius": "GOLVELLIUS"}
    entries = []
    for game_id, title in titles.items():
        _title_screen(draw_screen, title).save(tmp_path / f"{game_id}-title.png")
        _title_screen(draw_screen, title, background=(40, 12, 12)).save(
            tmp_path / f"{game_id}-other.png"
        )
        media = (
            MediaImage(str(tmp_path / f"{game_id}-title.png"), "title_screen"),
            MediaImage(str(tmp_path / f"{game_id}-other.png"), unread_kind),
        )
        entries.append(CatalogEntry(game_id, f"{title.title()} (Europe)", media))
    index = _build(entries, captioner, read_text=True)
    texts = {Path(image.path).name: (image.kind, image.text) for image in index.images}
    assert texts["chaos-other.png"] == (unread_kind, "")  # not a kind whose text is read
    kind, text = texts["chaos-title.png"]
    assert kind == "title_screen" and "SONIC" in _letters(text) and "CHAOS" in _letters(text)
    assert "GOLVELLIUS" in _letters(texts["golvellius-title.png"][1])
    # a title screen photographed elsewhere: its text is read and matched
    query = _title_screen(draw_screen, "SONIC CHAOS", background=(20, 40, 20), y=70)
    best = index.search(query, k=2, read_text=True)[0]
    assert best.game_id == "chaos"
    (text_evidence,) = [item for item in best.evidence if item.source == "text"]
    assert text_evidence.kind in ("name", "title_screen") and "sonic" in text_evidence.read
    # read_text=False: the query's text is never read
    assert all(len(hit.evidence) == 1 for hit in index.search(query, k=2, read_text=False))
    assert _build(entries[:1], captioner).images[0].text == ""  # read_text=False at build


def _sonic_and_golvellius(captioner, tmp_path, chaos_colour, golvellius_colour) -> GameIndex:
    """An index (text read) of two games, each one solid-colour cover."""
    names = {"chaos": "Sonic Chaos (Europe)", "golvellius": "Golvellius (USA)"}
    colours = {"chaos": chaos_colour, "golvellius": golvellius_colour}
    entries = []
    for game_id, name in names.items():
        Image.new("RGB", (64, 64), colours[game_id]).save(tmp_path / f"{game_id}.png")
        cover = MediaImage(str(tmp_path / f"{game_id}.png"), "cover")
        entries.append(CatalogEntry(game_id, name, (cover,)))
    return _build(entries, captioner, read_text=True)


def test_a_logo_the_plain_read_misses_is_read_again_in_its_brightest_channel(
    captioner, tmp_path, draw_banded_title
):
    pytest.importorskip("rapidocr", reason="the ocr extra is not installed")
    index = _sonic_and_golvellius(captioner, tmp_path, (200, 60, 195), (60, 200, 90))
    query = draw_banded_title("SONIC CHAOS")
    assert not any("SONIC" in _letters(line.text) for line in index.read(query))
    best = index.search(query, k=2, read_text=True)[0]
    assert best.game_id == "chaos"
    (text_evidence,) = [item for item in best.evidence if item.source == "text"]
    assert text_evidence.read == "sonic chaos"


def test_a_logo_no_read_finds_is_recognised_in_its_band_of_the_screen(
    captioner, tmp_path, draw_striped_title
):
    pytest.importorskip("rapidocr", reason="the ocr extra is not installed")
    # Golvellius's cover looks a little more like the query: the text must decide
    index = _sonic_and_golvellius(captioner, tmp_path, (24, 20, 12), (24, 22, 12))
    query = draw_striped_title("SONIC CHAOS")
    for view in (query, brightest_channel(query)):
        assert not any("SONIC" in _letters(line.text) for line in index.read(view))
    assert index.search(query, k=1, read_text=False)[0].game_id == "golvellius"
    best = index.search(query, k=2, read_text=True)[0]
    assert best.game_id == "chaos"
    (text_evidence,) = [item for item in best.evidence if item.source == "text"]
    assert text_evidence.read == "sonic chaos"


def test_a_hit_names_the_release_whose_name_was_read(shipped_captioner, tmp_path):
    pytest.importorskip("rapidfuzz", reason="text matching needs rapidfuzz (the ocr extra)")
    rng = np.random.default_rng(3)
    paths = []
    for number in range(4):
        path = tmp_path / f"cover{number}.png"
        Image.fromarray(rng.integers(0, 256, (56, 40, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    releases = [  # one game in two regions, named differently, and two other games
        CatalogEntry("7", "Hwarang Ui Geom (Korea)", (paths[0],), metadata={"region": "ko"}),
        CatalogEntry("7", "Kenseiden (Japan)", (paths[1],), metadata={"region": "jp"}),
        CatalogEntry("8", "Kung Fu Kid", (paths[2],)),
        CatalogEntry("9", "Ken no Hayashi", (paths[3],)),
    ]
    index = _build(releases, shipped_captioner)
    views = index.embed(paths[0])  # the Korean release's cover
    (seen,) = index.search_embedding(views, k=1)
    assert (seen.game_id, seen.name, seen.image) == ("7", "Hwarang Ui Geom (Korea)", paths[0])
    (read,) = index.search_embedding(views, k=1, text=["KENSEIDEN", "PUSH START BUTTON"])
    assert (read.game_id, read.name, read.metadata) == ("7", "Kenseiden (Japan)", {"region": "jp"})
    assert read.image == paths[0]  # still the image that looked most like the query
