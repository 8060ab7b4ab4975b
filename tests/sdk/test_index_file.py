"""Index files: what GameIndex.save writes loads back identical, and a malformed file is an
IndexFileError that names its problem, never a KeyError or a pickle loaded.

The malformed files are a good saved index taken apart with numpy, edited and put back
together with np.savez, as a hand-made or half-written file would be.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gamelab_caption import GameIndex, search
from gamelab_caption.catalog import MEDIA_KINDS, CatalogEntry, MediaImage
from gamelab_caption.errors import IndexFileError
from gamelab_caption.index_file import FORMAT_VERSION, read_index

SHOTS = search.WHITEN_MIN_IMAGES  # enough images for the first fill to learn a whitening
TITLE = "GOLVELLIUS"


@pytest.fixture(scope="module")
def entries(tmp_path_factory, draw_screen) -> list[CatalogEntry]:
    """SHOTS screenshots of random colours, one per entry, and a game with a title screen."""
    folder = tmp_path_factory.mktemp("index_file")
    rng = np.random.default_rng(0)
    unread = next(kind for kind in MEDIA_KINDS if kind not in search.READ_KINDS)
    entries = []
    for number in range(SHOTS):
        path = folder / f"{number}.png"
        Image.new("RGB", (16, 16), tuple(int(c) for c in rng.integers(0, 256, 3))).save(path)
        entries.append(
            CatalogEntry(
                str(number // 2),  # two releases per game
                f"Game {number}",
                (MediaImage(str(path), unread),),
                platform="mastersystem",
                rom=f"./Game {number} (USA).sms",
                metadata={"genre": "Action", "players": str(number % 4 + 1)},
                source=f"games.csv:{number + 2}",
            )
        )
    draw_screen([(TITLE, 40, 80)]).save(folder / "title.png")
    media = (MediaImage(str(folder / "title.png"), "title_screen"),)
    entries.append(
        CatalogEntry(
            "mastersystem/golvellius",
            "Golvellius - Valley of Doom (USA, Europe)",
            media,
            platform="mastersystem",
            rom="./Golvellius - Valley of Doom (USA, Europe).sms",
            id_derived=True,
        )
    )
    return entries


@pytest.fixture(scope="module")
def index(captioner, entries) -> GameIndex:
    pytest.importorskip("rapidocr", reason="the ocr extra is not installed")
    index = GameIndex.build(entries, captioner=captioner, progress=False, read_text=True)
    assert index.whitened and len(index.images) == SHOTS + 1
    assert TITLE in index.images[-1].text.upper().replace(" ", "")  # read at build
    return index


@pytest.fixture(scope="module")
def saved(index, tmp_path_factory) -> Path:
    return index.save(tmp_path_factory.mktemp("saved") / "games.idx")


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def _meta(arrays: dict[str, np.ndarray]) -> dict:
    return json.loads(arrays["meta"].tobytes())


def test_a_saved_index_loads_back_identical(index, entries, saved, captioner, tmp_path):
    loaded = GameIndex.load(saved, captioner=captioner, read_text=False)
    contents = read_index(saved)
    assert contents.entries == entries  # every field: media kinds, rom, id_derived, metadata
    assert loaded.images == index.images  # path, entry, kind and the text read
    assert {image.kind for image in loaded.images} == {entries[0].media[0].kind, "title_screen"}
    assert loaded.report == index.report and len(loaded) == len(index) == SHOTS // 2 + 1
    assert contents.vectors.dtype == np.float32
    assert contents.vectors.tobytes() == index._vectors.tobytes()  # bit-identical
    assert loaded.whitened
    for ours, theirs in zip(contents.whitening, index._whitening, strict=True):
        assert ours.dtype == theirs.dtype and ours.tobytes() == theirs.tobytes()
    for rgb in [(200, 30, 30), (30, 200, 30), (12, 16, 48)]:
        query = Image.new("RGB", (24, 24), rgb)
        assert loaded.search(query, k=5, read_text=False) == index.search(
            query, k=5, read_text=False
        )
    # the texts and names are matched as before: the title read at build is known after loading
    views = index.embed(Image.new("RGB", (24, 24), (200, 30, 30)))
    hits = loaded.search_embedding(views, k=len(index), text=[TITLE])
    assert hits == index.search_embedding(views, k=len(index), text=[TITLE])
    (golvellius,) = [hit for hit in hits if hit.game_id == "mastersystem/golvellius"]
    assert [item.source for item in golvellius.evidence] == ["image", "text"]
    # and saving the loaded index writes the same arrays again
    again = _arrays(loaded.save(tmp_path / "again.idx"))
    first = _arrays(saved)
    assert set(again) == set(first) == {"meta", "vectors", "whitening_mean", "whitening_matrix"}
    assert all(again[name].tobytes() == first[name].tobytes() for name in first)


def _rewrite(saved: Path, target: Path, edit: Callable[[dict, dict], object]) -> Path:
    """``saved`` with ``edit(meta, arrays)`` applied; it returns the new metadata (an object
    to write as JSON, or raw bytes) or None to keep ``meta`` as edited in place."""
    arrays = _arrays(saved)
    meta = _meta(arrays)
    new = edit(meta, arrays)
    new = meta if new is None else new
    if "meta" in arrays:
        raw = new if isinstance(new, bytes) else json.dumps(new).encode()
        if arrays["meta"].dtype == np.uint8:
            arrays["meta"] = np.frombuffer(raw, dtype=np.uint8)
    with open(target, "wb") as stream:  # a file object: np.savez would append ".npz"
        np.savez(stream, **arrays)
    return target


def _set(container, key, value):
    container[key] = value


def _drop(container, key):
    del container[key]


def _scaled(arrays, name, change):
    arrays[name] = change(arrays[name])


MALFORMED = {  # id: (edit(meta, arrays), what the message must say)
    "format-version": (lambda m, a: _set(m, "format_version", 1), r"has index format 1; .*rebuild"),
    "no-format-version": (lambda m, a: _drop(m, "format_version"), r"has index format None"),
    "meta-not-json": (lambda m, a: b'{"format_version": 2,', r"metadata is not JSON"),
    "meta-not-utf8": (lambda m, a: b"\xff\xfe\x00", r"metadata is not JSON"),
    "meta-not-object": (lambda m, a: [m], r"metadata must be a JSON object"),
    "no-meta": (lambda m, a: _drop(a, "meta"), r"is not a game index: no metadata"),
    "meta-of-floats": (
        lambda m, a: _set(a, "meta", a["meta"].astype(np.float32)),
        r"is not a game index: no metadata",
    ),
    "no-bundle": (lambda m, a: _drop(m, "bundle"), r"'bundle' must hold the strings"),
    "missing-entries": (lambda m, a: _drop(m, "entries"), r"'entries' must be a list"),
    "entry-is-a-list": (
        lambda m, a: _set(m["entries"], 0, list(m["entries"][0].values())),
        r"entry 0: .*must be an object, got list",
    ),
    "entry-metadata-is-a-list": (
        lambda m, a: _set(m["entries"][3], "metadata", ["genre", "Action"]),
        r"entry 3: .*'metadata' must be dict, got list",
    ),
    "entry-media-unknown-kind": (
        lambda m, a: _set(m["entries"][0]["media"][0], "kind", "poster"),
        r"entry 0: .*Unknown media kind 'poster'",
    ),
    "images-not-a-list": (lambda m, a: _set(m, "images", {}), r"'images' must be a list"),
    "image-unknown-kind": (
        lambda m, a: _set(m["images"][5], 2, "poster"),
        r"image 5 has unknown kind 'poster'",
    ),
    "image-of-a-nonexistent-entry": (
        lambda m, a: _set(m["images"][SHOTS], 1, SHOTS + 1),
        rf"image {SHOTS} names entry {SHOTS + 1}",
    ),
    "image-of-a-negative-entry": (
        lambda m, a: _set(m["images"][0], 1, -1),
        r"image 0 names entry -1",
    ),
    "image-entry-not-an-int": (
        lambda m, a: _set(m["images"][0], 1, True),
        r"image 0 must be \[path, entry, kind, text\]",
    ),
    "image-without-text": (
        lambda m, a: _set(m["images"], 0, m["images"][0][:3]),
        r"image 0 must be \[path, entry, kind, text\]",
    ),
    "report-negative": (
        lambda m, a: _set(m["report"], "built", -1),
        r"'report' counts must be non-negative integers",
    ),
    "report-skipped-not-counts": (
        lambda m, a: _set(m["report"], "skipped", {"no id": "1"}),
        r"'report' kinds and skipped must map names to integers",
    ),
    "more-vectors-than-images": (
        lambda m, a: _scaled(a, "vectors", lambda v: np.concatenate([v, v[:2]])),
        rf"{SHOTS + 3} vectors for {SHOTS + 1} images",
    ),
    "fewer-vectors-than-images": (
        lambda m, a: _scaled(a, "vectors", lambda v: v[:-1]),
        rf"{SHOTS} vectors for {SHOTS + 1} images",
    ),
    "no-vectors": (lambda m, a: _drop(a, "vectors"), rf"{SHOTS + 1} images but no vectors"),
    "vectors-of-float64": (
        lambda m, a: _scaled(a, "vectors", lambda v: v.astype(np.float64)),
        r"vectors must be a 2-D float32 array, got float64",
    ),
    "vectors-flattened": (
        lambda m, a: _scaled(a, "vectors", np.ravel),
        r"vectors must be a 2-D float32 array",
    ),
    "nan-vectors": (
        lambda m, a: _set(a["vectors"], (3, 0), np.nan),
        r"vectors hold NaN or infinity",
    ),
    "infinite-vectors": (
        lambda m, a: _set(a["vectors"], (0, 1), np.inf),
        r"vectors hold NaN or infinity",
    ),
    "half-a-whitening": (lambda m, a: _drop(a, "whitening_mean"), r"half a whitening"),
    "whitening-not-square": (
        lambda m, a: _scaled(a, "whitening_matrix", lambda w: w[:-1]),
        r"whitening must be float32 \(D,\) and \(D, D\)",
    ),
    "whitening-of-other-dimensions": (
        lambda m, a: _scaled(a, "vectors", lambda v: np.pad(v, ((0, 0), (0, 1)))),
        r"whitening is \d+-dimensional, the vectors \d+",
    ),
    "nan-whitening": (
        lambda m, a: _set(a["whitening_mean"], 0, np.nan),
        r"NaN whitening",
    ),
    "pickled-vectors": (
        lambda m, a: _set(a, "vectors", np.array([object()] * (SHOTS + 1), dtype=object)),
        r"is not a game index: .*allow_pickle",
    ),
}


@pytest.mark.parametrize(("edit", "message"), MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_index_file_names_its_problem(saved, captioner, tmp_path, edit, message):
    path = _rewrite(saved, tmp_path / "bad.idx", edit)
    with pytest.raises(IndexFileError, match=message) as error:
        GameIndex.load(path, captioner=captioner, read_text=False)
    assert str(path) in str(error.value)  # which file


def test_the_wrong_format_version_says_to_rebuild(saved, tmp_path):
    path = _rewrite(saved, tmp_path / "old.idx", lambda m, a: _set(m, "format_version", 1))
    with pytest.raises(IndexFileError) as error:
        read_index(path)
    message = str(error.value)
    assert f"reads version {FORMAT_VERSION}" in message and "rebuild it with" in message


def test_a_file_that_is_not_an_npz_is_refused(tmp_path, captioner):
    text = tmp_path / "games.idx"
    text.write_text("gamelist.xml, not an index\n")
    with pytest.raises(IndexFileError, match="is not a game index"):
        GameIndex.load(text, captioner=captioner, read_text=False)
    with pytest.raises(IndexFileError, match="Index file not found"):
        read_index(tmp_path / "absent.idx")


@pytest.mark.parametrize("cut", ["half", "last-byte"])
def test_a_truncated_index_file_is_refused(saved, tmp_path, cut):
    data = saved.read_bytes()
    truncated = tmp_path / "truncated.idx"
    truncated.write_bytes(data[: len(data) // 2] if cut == "half" else data[:-1])
    with pytest.raises(IndexFileError, match="is not a game index"):
        read_index(truncated)


def test_an_index_file_with_a_damaged_member_is_refused(saved, tmp_path):
    data = bytearray(saved.read_bytes())
    where = data.index(b'"format_version"')  # inside the stored (uncompressed) meta array
    data[where + 1] ^= 0x20  # one bit flipped: the member's CRC no longer matches
    damaged = tmp_path / "damaged.idx"
    damaged.write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match="is not a game index"):
        read_index(damaged)
