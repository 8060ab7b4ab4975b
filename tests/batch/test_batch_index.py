"""A game index assembled from a batch job's output equals one built in a single process."""

from __future__ import annotations

import glob
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow")
pytest.importorskip("ray")

from gamelab_caption import Captioner, cli  # noqa: E402
from gamelab_caption.errors import BatchInputError, BundleError  # noqa: E402
from gamelab_caption.ocr import ocr_available  # noqa: E402
from gamelab_caption.search import WHITEN_MIN_IMAGES, GameIndex  # noqa: E402

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
MASTER_SYSTEM = SHARED / "games" / "mastersystem" / "downloaded_images"
TITLES = SHARED / "games" / "libretro" / "Sega - Master System - Mark III" / "Named_Titles"
COVERS = 62  # + 2 title screens: WHITEN_MIN_IMAGES, so the index learns its whitening


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """A CSV catalogue: COVERS Master System covers, 2 with title screens (text is read in
    those), one cover cut short and one missing; the CSV's paths are relative to it."""
    if not MASTER_SYSTEM.is_dir() or not TITLES.is_dir():
        pytest.skip(f"shared data not found: {MASTER_SYSTEM} (see ../shared/data/README.md)")
    folder = tmp_path_factory.mktemp("catalogue")
    covers = sorted(glob.glob(str(MASTER_SYSTEM / "*.jpg")))[:COVERS]
    titles = sorted(glob.glob(str(TITLES / "*.png")))[:2]
    rows = ["id,name,image,titleshot"]
    for number, cover in enumerate(covers):
        shutil.copy(cover, folder / f"{number}.jpg")
        title = ""
        if number < len(titles):
            title = f"title{number}.png"
            shutil.copy(titles[number], folder / title)
        rows.append(f"{number},Game {number},{number}.jpg,{title}")
    (folder / "bad.jpg").write_bytes((folder / "0.jpg").read_bytes()[:300])
    rows += [f"{COVERS},Corrupt,bad.jpg,", f"{COVERS + 1},Missing,gone.jpg,"]
    (folder / "games.csv").write_text("\n".join(rows) + "\n")
    return folder / "games.csv"


def test_index_built_from_batch_output_is_the_index_built_in_one_process(
    ray_cluster, catalogue, real_captioner, tmp_path
):
    output, index_file = tmp_path / "embeddings", tmp_path / "games.npz"
    batch = ["batch", str(catalogue), "--catalog", "--no-caption", "-o", str(output), "--quiet"]
    assert cli.main(batch + ["--actors", "2", "--batch-size", "16"]) == 1  # 2 unusable images
    build = ["index", "build", str(catalogue), "--embeddings", str(output), "-o", str(index_file)]
    assert cli.main(build + ["--quiet"]) == 0

    assembled = GameIndex.load(index_file, captioner=real_captioner)
    built = GameIndex.build(catalogue, captioner=real_captioner, progress=False)
    assert built.whitened and len(built.images) == COVERS + 2 == WHITEN_MIN_IMAGES
    assert np.array_equal(assembled._vectors, built._vectors)
    for ours, theirs in zip(assembled._whitening, built._whitening, strict=True):
        assert np.array_equal(ours, theirs)
    assert assembled.images == built.images
    assert assembled.report == built.report
    assert built.report.skipped == {"corrupt image": 1, "missing image": 1}
    if ocr_available():
        assert sum(bool(image.text) for image in built.images) >= 1


def test_index_from_batch_output_refuses_what_does_not_match(
    ray_cluster, catalogue, real_captioner, tiny_bundle, tmp_path
):
    lines = catalogue.read_text().splitlines()
    small = catalogue.parent / "small.csv"  # games 0-3: 4 covers, 2 title screens
    small.write_text("\n".join(lines[:5]) + "\n")
    with pytest.raises(BatchInputError, match="No batch output"):
        GameIndex.build(small, captioner=real_captioner, embeddings=tmp_path, progress=False)
    output = tmp_path / "tiny"
    batch = ["batch", str(small), "--catalog", "--no-caption", "--no-text", "-o", str(output)]
    assert cli.main(batch + ["--model", str(tiny_bundle), "--quiet", "--actors", "1"]) == 0
    with pytest.raises(BundleError, match="another encoder"):
        GameIndex.build(small, captioner=real_captioner, embeddings=output, progress=False)
    tiny = GameIndex(captioner=Captioner(tiny_bundle))
    if tiny.reads_text:
        with pytest.raises(BatchInputError, match="without reading text"):
            tiny.add(small, embeddings=output, progress=False)
    fewer = catalogue.parent / "fewer.csv"
    fewer.write_text("\n".join(lines[:1] + lines[2:5]) + "\n")
    index = GameIndex(captioner=tiny.captioner, read_text=False)
    with pytest.raises(ValueError, match="1 of 4 catalogue images are not in"):
        index.add(fewer, embeddings=output, progress=False)  # game 0 gone: 1.jpg has no clutter
    assert index.add(small, embeddings=output, progress=False).images == 6
