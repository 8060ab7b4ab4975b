"""Batch jobs on a real local Ray cluster: the same captions and embeddings as one process,
nothing lost or repeated when an actor or the driver dies, bad images as rows, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

parquet = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("ray")

from gamelab_caption.batch import BatchOptions, run  # noqa: E402
from gamelab_caption.batch_output import PART_PATTERN  # noqa: E402

ACTOR_TITLE = "MapBatches(BatchCaptioner)"  # in the process title Ray gives each actor
KILL_IMAGES = 128  # 8 batches of 16 on 2 actors: batches are in flight when one dies


def _rows(folder: Path) -> list[dict]:
    return parquet.read_table(folder).to_pylist()


def _by_path(rows: list[dict]) -> dict[str, dict]:
    paths = [row["path"] for row in rows]
    assert len(paths) == len(set(paths)), "a path is in the output more than once"
    return {row["path"]: row for row in rows}


def _descendants(pid: int) -> set[int]:
    """Processes below ``pid`` (from /proc): the local cluster's head, raylet and workers."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _busy_actor() -> int | None:
    """The pid of an actor of our cluster that is running a batch (Ray titles it
    ``ray::MapWorker(MapBatches(BatchCaptioner)).submit`` meanwhile), or None."""
    for pid in sorted(_descendants(os.getpid())):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if f"{ACTOR_TITLE}).submit" in title:
            return pid
    return None


def test_captions_and_embeddings_equal_caption_batch_in_one_process(
    ray_cluster, photos, real_captioner, tmp_path
):
    report = run(photos, tmp_path / "out", BatchOptions(actors=2), progress=False)
    assert (report.images, report.processed, report.errors, report.actors) == (256, 256, 0, 2)
    rows = _by_path(_rows(tmp_path / "out"))
    expected = real_captioner.caption_batch(photos, return_embedding=True)
    assert set(rows) == set(photos)
    for path, result in zip(photos, expected, strict=True):
        row = rows[path]
        assert (row["caption"], row["score"], row["error"]) == (result.text, result.score, None)
        alternatives = [(item["caption"], item["score"]) for item in row["alternatives"]]
        assert alternatives == list(result.alternatives)
        assert np.array_equal(np.asarray(row["embedding"], np.float32), result.embedding)


def test_an_actor_killed_mid_batch_loses_no_row_and_repeats_none(
    ray_cluster, photos, photo_embeddings, tmp_path
):
    photos, killed = photos[:KILL_IMAGES], []

    def kill_a_busy_actor(done: int, total: int) -> None:
        deadline = time.monotonic() + 10
        while not killed and done < total and time.monotonic() < deadline:
            victim = _busy_actor()
            if victim is not None:
                os.kill(victim, signal.SIGKILL)  # in the middle of a batch
                killed.append(victim)
            time.sleep(0.01)

    options = BatchOptions(caption=False, actors=2, batch_size=16)
    report = run(photos, tmp_path / "out", options, progress=kill_a_busy_actor)
    assert killed, "no actor was found running a batch"
    assert report.processed == len(photos) and report.errors == 0
    rows = _by_path(_rows(tmp_path / "out"))
    assert set(rows) == set(photos)
    vectors = np.stack([np.asarray(rows[path]["embedding"], np.float32) for path in photos])
    assert np.array_equal(vectors, photo_embeddings[:KILL_IMAGES])


def test_unusable_images_are_error_rows_and_a_rerun_after_a_crash_does_only_the_rest(
    ray_cluster, photos, photo_embeddings, tmp_path
):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(Path(photos[0]).read_bytes()[:500])  # a JPEG cut short
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    listed = photos[:96] + [str(corrupt), str(text), str(tmp_path / "gone.jpg")]
    table = tmp_path / "images.csv"
    table.write_text("id,path\n" + "".join(f"{n},{p}\n" for n, p in enumerate(listed)))
    output = tmp_path / "out"
    # A driver that dies mid-run (SIGKILL, no clean-up) after writing some parts.
    script = (
        "import sys, gamelab_caption.batch_output as out\n"
        "from gamelab_caption.batch import BatchOptions, run\n"
        "out.FLUSH_ROWS = 16\n"
        "run([sys.argv[1]], sys.argv[2], BatchOptions(caption=False, actors=1, batch_size=16),"
        " address=sys.argv[3], progress=False)\n"
    )
    address = ray_cluster.get_runtime_context().gcs_address
    driver = subprocess.Popen([sys.executable, "-c", script, str(table), str(output), address])
    deadline = time.monotonic() + 90
    while len(list(output.glob(PART_PATTERN))) < 2 and driver.poll() is None:
        assert time.monotonic() < deadline, "the first driver wrote no part in 90 s"
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    before = len(_rows(output))
    assert 0 < before < len(listed), "the crash should leave part of the job done"
    # a part the crash cut short, hidden: Parquet readers skip it; a rerun removes it, and one
    # named as earlier releases named them
    (output / ".part-unfinished-00000.parquet.tmp").write_bytes(b"half a part")
    assert len(_rows(output)) == before
    (output / "part-unfinished-00001.parquet.tmp").write_bytes(b"half a part")

    options = BatchOptions(caption=False, actors=2, batch_size=16)
    report = run([table], output, options, progress=False)
    assert (report.skipped, report.processed) == (before, len(listed) - before)
    assert not [name for name in os.listdir(output) if name.endswith(".tmp")]
    rows = _by_path(_rows(output))
    assert set(rows) == set(listed)
    assert {path: rows[path]["error_type"] for path in listed[96:]} == {
        str(corrupt): "ImageError",
        str(text): "NotAnImage",
        str(tmp_path / "gone.jpg"): "FileNotFoundError",
    }
    assert all(rows[path]["error"] and rows[path]["embedding"] is None for path in listed[96:])
    vectors = np.stack([np.asarray(rows[path]["embedding"], np.float32) for path in photos[:96]])
    assert np.array_equal(vectors, photo_embeddings[:96])

    again = run([table], output, options, progress=False)  # nothing left: Ray is not needed
    assert (again.skipped, again.processed, again.actors) == (len(listed), 0, 0)
