"""Load captioned-image datasets (Flickr8k CSV or token file, COCO JSON) into one shape.

Training and evaluation read ``Example`` lists and never parse dataset files themselves. Real
datasets have faults (captions for images that are not on disk, empty captions, rows repeated,
split files naming uncaptioned images); each is counted in a ``LoadReport`` and logged, so a
caller can see what was dropped or kept instead of losing it silently.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from gamelab_caption.vocabulary import tokenize

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
CAPTIONS_CSV = "captions.txt"  # Kaggle Flickr8k: CSV with header "image,caption"
TOKEN_FILE = "Flickr8k.token.txt"  # original Flickr8k: "name.jpg#i<TAB>caption"
SPLIT_FILE = "Flickr_8k.{split}Images.txt"  # one image name a line, next to the captions
IMAGES_DIR = "images"  # Flickr8k images, next to the captions, unless images_dir is given
_CSV_HEADER = ["image", "caption"]
_EXAMPLES_IN_LOG = 3  # how many offending names a warning quotes


@dataclass(frozen=True)
class Example:
    """One image and its captions.

    Attributes:
        image_id: Flickr8k: the file name; COCO: ``str(id)``.
        path: absolute path of the image file.
        captions: the raw captions, stripped, in file order.
    """

    image_id: str
    path: Path
    captions: tuple[str, ...]


@dataclass
class LoadReport:
    """What ``load_dataset`` kept and what it found wrong.

    Attributes:
        source: the captions file read.
        split: the split selected, or None for all images.
        images: images returned.
        captions: captions returned.
        missing_images: captioned images not on disk; their captions are dropped.
        empty_captions: captions with no words; dropped.
        duplicate_captions: (image, caption) rows seen before; kept, since Flickr8k annotators
            sometimes wrote the same sentence and published evaluations keep all references.
        unknown_images: images listed (split file, COCO ``images``) without captions; skipped.
    """

    source: str
    split: str | None
    images: int
    captions: int
    missing_images: int
    empty_captions: int
    duplicate_captions: int
    unknown_images: int

    def summary(self) -> str:
        """One line with every count, for logs and reports."""
        split = self.split or "all"
        return (
            f"{self.source} [{split}]: {self.images} images, {self.captions} captions; "
            f"{self.missing_images} missing images, {self.empty_captions} empty captions, "
            f"{self.duplicate_captions} duplicate captions, {self.unknown_images} unknown images"
        )


def load_dataset(
    path: str | Path, split: str | None = None, *, images_dir: str | Path | None = None
) -> tuple[list[Example], LoadReport]:
    """Load a captioned-image dataset, detecting its format.

    Formats: a folder holding ``captions.txt`` (CSV) or ``Flickr8k.token.txt`` with
    ``Flickr_8k.{train,dev,test}Images.txt`` and ``images/``; either of those files given
    directly; or a COCO captions JSON (``captions_train2017.json``), already one split.

    Args:
        path: the dataset folder or its captions file.
        split: "train", "dev" or "test" to keep the images its split file lists; None for all.
            COCO files are split by file, so they take None only.
        images_dir: where the image files are. Default: ``images/`` next to the captions file
            (Flickr8k, and COCO when there is one), else the COCO JSON's folder.

    Returns:
        The examples sorted by ``image_id``, and a ``LoadReport`` of what was kept and dropped.

    Raises:
        ValueError: unknown split, unrecognised folder, or malformed file (names file and line).
        FileNotFoundError: ``path`` or the split file does not exist.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"Invalid split {split!r}, expected one of: {', '.join(SPLITS)} or None")
    source = _find_captions_file(Path(path))
    if source.suffix.lower() == ".json":
        if split is not None:
            raise ValueError(f"{source}: a COCO file is already one split; pass split=None")
        rows, file_names = _read_coco(source)
        listed: list[str] | None = list(file_names)
        beside = source.parent / IMAGES_DIR
        default_images = beside if beside.is_dir() else source.parent
    else:
        rows = _read_csv(source) if _is_csv(source) else _read_token_file(source)
        file_names = {}
        listed = _read_split_file(source.parent, split) if split else None
        default_images = source.parent / IMAGES_DIR
    images = Path(images_dir if images_dir is not None else default_images).absolute()
    return _assemble(rows, file_names, listed, images, str(source), split)


def _find_captions_file(path: Path) -> Path:
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"No dataset at {path}")
    for name in (CAPTIONS_CSV, TOKEN_FILE):
        if (path / name).is_file():
            return path / name
    raise ValueError(
        f"{path}: no {CAPTIONS_CSV} or {TOKEN_FILE} in this folder; "
        "pass the captions file (COCO: the captions JSON) instead"
    )


def _is_csv(path: Path) -> bool:
    return path.name == CAPTIONS_CSV or path.suffix.lower() == ".csv"


def _read_csv(path: Path) -> Iterator[tuple[str, str, int]]:
    """Yield (image name, caption, line) from a CSV with header ``image,caption``."""
    with path.open(encoding="utf-8-sig", newline="") as file:
        reader = csv.reader(file)
        header = next(reader, None)
        if header is None or [cell.strip() for cell in header] != _CSV_HEADER:
            raise ValueError(f"{path}:1: expected header 'image,caption', got {header!r}")
        for row in reader:
            if not row:
                continue  # blank line
            if len(row) != 2:
                raise ValueError(
                    f"{path}:{reader.line_num}: expected 2 fields (image,caption), got {len(row)}"
                )
            yield row[0].strip(), row[1], reader.line_num


def _read_token_file(path: Path) -> Iterator[tuple[str, str, int]]:
    """Yield (image name, caption, line) from ``name.jpg#i<TAB>caption`` lines."""
    with path.open(encoding="utf-8-sig") as file:
        for line_number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            key, tab, caption = line.rstrip("\r\n").partition("\t")
            if not tab:
                raise ValueError(f"{path}:{line_number}: expected 'name.jpg#i<TAB>caption'")
            yield key.partition("#")[0].strip(), caption, line_number


def _read_split_file(folder: Path, split: str) -> list[str]:
    path = folder / SPLIT_FILE.format(split=split)
    if not path.is_file():
        raise FileNotFoundError(f"Split file for {split!r} not found: {path}")
    return [
        line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()
    ]


def _read_coco(path: Path) -> tuple[list[tuple[str, str, int]], dict[str, str]]:
    """Return (image id, caption, annotation index) rows and image id -> file name."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{path}: expected a COCO captions JSON with an 'images' list")
    if not isinstance(data.get("annotations"), list):
        raise ValueError(f"{path}: expected a COCO captions JSON with an 'annotations' list")
    file_names: dict[str, str] = {}
    for index, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise ValueError(f"{path}: images[{index}] needs 'id' and 'file_name'")
        file_names[str(image["id"])] = str(image["file_name"])
    rows = []
    for index, annotation in enumerate(data["annotations"]):
        if not isinstance(annotation, dict) or "image_id" not in annotation:
            raise ValueError(f"{path}: annotations[{index}] needs 'image_id' and 'caption'")
        caption = annotation.get("caption")
        if not isinstance(caption, str):
            raise ValueError(f"{path}: annotations[{index}] needs a string 'caption'")
        image_id = str(annotation["image_id"])
        if image_id not in file_names:
            raise ValueError(f"{path}: annotations[{index}] names image {image_id}, not in images")
        rows.append((image_id, caption, index))
    return rows, file_names


def _assemble(
    rows: Iterable[tuple[str, str, int]],
    file_names: dict[str, str],
    listed: list[str] | None,
    images_dir: Path,
    source: str,
    split: str | None,
) -> tuple[list[Example], LoadReport]:
    """Group captions by image, keep ``listed`` images (all if None), drop what is not on disk."""
    wanted = set(listed) if listed is not None else None
    captions: dict[str, list[str]] = {}
    seen: set[tuple[str, str]] = set()
    empty = duplicate = 0
    for image_id, raw_caption, line in rows:
        if wanted is not None and image_id not in wanted:
            continue
        caption = raw_caption.strip()
        if not tokenize(caption):
            empty += 1
            logger.debug("%s:%s: empty caption for %s dropped", source, line, image_id)
            continue
        if (image_id, caption) in seen:
            duplicate += 1
            logger.debug("%s:%s: duplicate caption for %s kept", source, line, image_id)
        seen.add((image_id, caption))
        captions.setdefault(image_id, []).append(caption)

    unknown = sorted(wanted - captions.keys()) if wanted is not None else []
    on_disk = _FileIndex()
    examples, missing = [], []
    for image_id in sorted(captions):
        path = images_dir / file_names.get(image_id, image_id)
        if on_disk.exists(path):
            examples.append(Example(image_id, path, tuple(captions[image_id])))
        else:
            missing.append(image_id)

    report = LoadReport(
        source=source,
        split=split,
        images=len(examples),
        captions=sum(len(example.captions) for example in examples),
        missing_images=len(missing),
        empty_captions=empty,
        duplicate_captions=duplicate,
        unknown_images=len(unknown),
    )
    _log_faults(report, images_dir, missing, unknown, sum(len(captions[i]) for i in missing))
    return examples, report


def _log_faults(
    report: LoadReport, images_dir: Path, missing: list[str], unknown: list[str], dropped: int
) -> None:
    if missing:
        logger.warning(
            "%s: %d images not found in %s, their %d captions dropped (e.g. %s)",
            report.source,
            len(missing),
            images_dir,
            dropped,
            missing[:_EXAMPLES_IN_LOG],
        )
    if report.empty_captions:
        logger.warning("%s: %d empty captions dropped", report.source, report.empty_captions)
    if report.duplicate_captions:
        logger.warning(
            "%s: %d duplicate (image, caption) rows kept", report.source, report.duplicate_captions
        )
    if unknown:
        logger.warning(
            "%s: %d listed images have no captions, skipped (e.g. %s)",
            report.source,
            len(unknown),
            unknown[:_EXAMPLES_IN_LOG],
        )
    logger.info("%s", report.summary())


class _FileIndex:
    """Answers "is this file there?" with one directory listing per folder, not a stat per image."""

    def __init__(self) -> None:
        self._folders: dict[Path, frozenset[str]] = {}

    def exists(self, path: Path) -> bool:
        folder = path.parent
        if folder not in self._folders:
            try:
                with os.scandir(folder) as entries:
                    names = frozenset(entry.name for entry in entries if entry.is_file())
            except (FileNotFoundError, NotADirectoryError):
                names = frozenset()
            self._folders[folder] = names
        return path.name in self._folders[folder]
