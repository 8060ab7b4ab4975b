"""Dataset loaders on small fixtures written to tmp_path, plus one check on the real Flickr8k."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from gamelab_export.data import Example, load_dataset

FLICKR8K = Path(__file__).parents[2].parent / "shared/data/flickr8k"

CHILD = "1000268201_693b08cb0e.jpg"
DOG = "1012212859_01547e3f17.jpg"
LAKE = "1022454332_6af2c1449a.jpg"
GONE = "9000268201_993b08cb0e.jpg"  # captioned, but no image file
# Real Flickr8k rows; commas inside captions are quoted, as in the Kaggle captions.txt.
ROWS = [
    (CHILD, "A child in a pink dress is climbing up a set of stairs in an entry way ."),
    (CHILD, "A girl going into a wooden building ."),
    (DOG, "A dog shakes its head near the shore , a red ball next to it ."),
    (DOG, "Dog with orange ball at feet , stands on shore shaking off water"),
    (DOG, "A dog shakes its head near the shore , a red ball next to it ."),  # duplicate row
    (LAKE, "Two people are at the edge of a lake , facing the water and the city skyline ."),
    (LAKE, ""),  # empty
    (LAKE, " . "),  # no words
    (GONE, "A black dog and a spotted dog are fighting"),
]
SPLITS = {
    "train": f"{CHILD}\n{DOG}\n",
    "dev": f"{LAKE}\n\n\n",  # trailing blank lines
    "test": f"{GONE}\nnever_captioned.jpg\n",
}


def _write_images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(names):
        Image.new("RGB", (8, 8), (40 * index, 90, 160)).save(folder / name)


def _write_splits(folder: Path) -> None:
    for split, text in SPLITS.items():
        (folder / f"Flickr_8k.{split}Images.txt").write_text(text)


def _csv_line(name: str, caption: str) -> str:
    return f'{name},"{caption}"' if "," in caption else f"{name},{caption}"


@pytest.fixture
def flickr_csv(tmp_path: Path) -> Path:
    folder = tmp_path / "flickr8k"
    _write_images(folder / "images", [CHILD, DOG, LAKE])
    lines = ["image,caption", *(_csv_line(name, caption) for name, caption in ROWS)]
    (folder / "captions.txt").write_text("\n".join(lines) + "\n")
    _write_splits(folder)
    return folder


@pytest.fixture
def flickr_token(tmp_path: Path) -> Path:
    folder = tmp_path / "flickr8k_text"
    _write_images(folder / "images", [CHILD, DOG, LAKE])
    counters: dict[str, int] = {}
    lines = []
    for name, caption in ROWS:
        index = counters[name] = counters.get(name, -1) + 1
        lines.append(f"{name}#{index}\t{caption}")
    (folder / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    _write_splits(folder)
    return folder


def test_csv_loads_quoted_commas_sorted_with_absolute_paths(flickr_csv: Path):
    examples, report = load_dataset(flickr_csv)

    assert [e.image_id for e in examples] == [CHILD, DOG, LAKE]
    dog = examples[1]
    assert dog.captions[0] == "A dog shakes its head near the shore , a red ball next to it ."
    assert dog.captions[1] == "Dog with orange ball at feet , stands on shore shaking off water"
    assert all(e.path.is_absolute() and e.path.is_file() for e in examples)
    child_captions = tuple(caption for name, caption in ROWS if name == CHILD)
    assert examples[0] == Example(CHILD, flickr_csv.absolute() / "images" / CHILD, child_captions)


def test_report_counts_missing_empty_duplicate(flickr_csv: Path):
    _, report = load_dataset(flickr_csv)

    assert (report.images, report.captions) == (3, 6)  # 2 + 3 (duplicate kept) + 1
    assert report.missing_images == 1  # GONE: its caption is dropped
    assert report.empty_captions == 2
    assert report.duplicate_captions == 1
    assert report.unknown_images == 0
    assert report.split is None and report.source.endswith("captions.txt")


def test_summary_states_every_count(flickr_csv: Path):
    _, report = load_dataset(flickr_csv, "test")

    summary = report.summary()
    assert "\n" not in summary
    for text in ("[test]", "0 images", "0 captions", "1 missing images", "0 empty captions",
                 "0 duplicate captions", "1 unknown images"):  # fmt: skip
        assert text in summary


def test_faults_are_logged(flickr_csv: Path, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="gamelab_export.data"):
        load_dataset(flickr_csv)

    messages = "\n".join(record.getMessage() for record in caplog.records)
    assert GONE in messages and "1 images not found" in messages
    assert "2 empty captions" in messages
    assert "1 duplicate" in messages


def test_split_files_select_images_and_count_unknown_names(flickr_csv: Path):
    train, train_report = load_dataset(flickr_csv, "train")
    dev, _ = load_dataset(flickr_csv, "dev")
    test, test_report = load_dataset(flickr_csv, "test")

    assert [e.image_id for e in train] == [CHILD, DOG]
    assert train_report.duplicate_captions == 1 and train_report.empty_captions == 0
    assert [e.image_id for e in dev] == [LAKE]
    assert test == []
    assert (test_report.missing_images, test_report.unknown_images) == (1, 1)


def test_unknown_split_is_rejected_with_choices(flickr_csv: Path):
    with pytest.raises(ValueError, match="train, dev, test"):
        load_dataset(flickr_csv, "val")


def test_broken_csv_header_names_file_and_line(tmp_path: Path):
    (tmp_path / "captions.txt").write_text("filename;caption\na.jpg;A dog .\n")

    with pytest.raises(ValueError, match=r"captions\.txt:1: expected header"):
        load_dataset(tmp_path)


def test_csv_row_with_extra_fields_names_its_line(tmp_path: Path):
    (tmp_path / "captions.txt").write_text(f"image,caption\n{CHILD},A girl .\n{DOG},A dog , wet\n")

    with pytest.raises(ValueError, match=r"captions\.txt:3: expected 2 fields"):
        load_dataset(tmp_path)


def test_token_file_loads_like_the_csv(flickr_csv: Path, flickr_token: Path):
    from_csv, csv_report = load_dataset(flickr_csv, "train")
    from_folder, token_report = load_dataset(flickr_token, "train")
    from_file, _ = load_dataset(flickr_token / "Flickr8k.token.txt", "train")

    def content(examples: list[Example]) -> list[tuple[str, tuple[str, ...]]]:
        return [(e.image_id, e.captions) for e in examples]

    assert content(from_folder) == content(from_file) == content(from_csv)
    assert from_folder == from_file
    counts = ("images", "captions", "missing_images", "empty_captions", "duplicate_captions")
    assert all(getattr(token_report, c) == getattr(csv_report, c) for c in counts)


def test_token_line_without_tab_names_file_and_line(tmp_path: Path):
    token = tmp_path / "Flickr8k.token.txt"
    token.write_text(f"{CHILD}#0\tA girl .\n{CHILD}#1 A girl going into a wooden building .\n")

    with pytest.raises(ValueError, match=r"Flickr8k\.token\.txt:2: expected"):
        load_dataset(token)


def test_missing_split_file_raises(flickr_token: Path):
    (flickr_token / "Flickr_8k.devImages.txt").unlink()

    with pytest.raises(FileNotFoundError, match="Flickr_8k.devImages.txt"):
        load_dataset(flickr_token, "dev")


def test_folder_without_captions_is_rejected(tmp_path: Path):
    with pytest.raises(ValueError, match="captions.txt or Flickr8k.token.txt"):
        load_dataset(tmp_path)


def _write_coco(path: Path, images: list[dict], annotations: list[dict]) -> Path:
    path.write_text(json.dumps({"info": {}, "images": images, "annotations": annotations}))
    return path


def test_coco_json_resolves_images_and_counts_faults(tmp_path: Path):
    _write_images(tmp_path / "val2017", ["000000000139.jpg", "000000000285.jpg"])
    images = [
        {"id": 285, "file_name": "000000000285.jpg"},
        {"id": 139, "file_name": "000000000139.jpg"},
        {"id": 632, "file_name": "000000000632.jpg"},  # not on disk
        {"id": 724, "file_name": "000000000724.jpg"},  # no annotations
    ]
    annotations = [
        {"image_id": 285, "id": 1, "caption": "A big burly grizzly bear is show with grass."},
        {"image_id": 139, "id": 2, "caption": "A woman stands in the dining area at the table.\n"},
        {"image_id": 285, "id": 3, "caption": "   "},
        {"image_id": 632, "id": 4, "caption": "Bedroom scene with a bookcase, blue comforter."},
        {"image_id": 285, "id": 5, "caption": "A big burly grizzly bear is show with grass."},
    ]
    json_path = _write_coco(tmp_path / "captions_val2017.json", images, annotations)

    examples, report = load_dataset(json_path, images_dir=tmp_path / "val2017")

    assert [e.image_id for e in examples] == ["139", "285"]  # sorted as strings
    assert examples[0].captions == ("A woman stands in the dining area at the table.",)
    assert examples[1].path == (tmp_path / "val2017" / "000000000285.jpg").absolute()
    assert (report.images, report.captions, report.missing_images) == (2, 3, 1)
    assert (report.empty_captions, report.duplicate_captions, report.unknown_images) == (1, 1, 1)


def test_coco_images_default_to_the_json_folder(tmp_path: Path):
    _write_images(tmp_path, ["000000000139.jpg"])
    images = [{"id": 139, "file_name": "000000000139.jpg"}]
    json_path = _write_coco(
        tmp_path / "captions_val2017.json", images, [{"image_id": 139, "caption": "A room."}]
    )

    examples, report = load_dataset(json_path)

    assert examples[0].path == (tmp_path / "000000000139.jpg").absolute()
    assert report.missing_images == 0


def test_coco_without_annotations_is_rejected(tmp_path: Path):
    json_path = tmp_path / "image_info_test2017.json"
    json_path.write_text(json.dumps({"images": [{"id": 1, "file_name": "1.jpg"}]}))

    with pytest.raises(ValueError, match="image_info_test2017.json.*annotations"):
        load_dataset(json_path)


def test_coco_is_one_split_already(tmp_path: Path):
    json_path = _write_coco(tmp_path / "captions_val2017.json", [], [])

    with pytest.raises(ValueError, match="split=None"):
        load_dataset(json_path, "test")


@pytest.mark.skipif(
    not FLICKR8K.is_dir(), reason=f"real Flickr8k not found at {FLICKR8K} (see shared/data)"
)
def test_real_flickr8k_has_the_standard_splits():
    expected = {"train": (6000, 30000), "dev": (1000, 5000), "test": (1000, 5000)}
    seen: set[str] = set()
    for split, (images, captions) in expected.items():
        examples, report = load_dataset(FLICKR8K, split)

        assert (report.images, report.captions) == (images, captions), report.summary()
        assert report.missing_images == 0 and report.empty_captions == 0, report.summary()
        assert len(examples) == images
        assert not seen & {e.image_id for e in examples}  # splits do not overlap
        seen |= {e.image_id for e in examples}
