"""Sequence-level knowledge distillation (Kim & Rush 2016): a teacher bundle captions the
training photos, and the student decoder is trained on the teacher's best beams instead of
(or beside) the human captions.

The teacher is what users run, a bundle decoded by the SDK (e.g. the three-decoder ensemble),
so the student learns the sequences that ensemble's beam search picks; one decoder then costs
a third of the ensemble's steps. The teacher's captions are cached in the run folder, a chunk
at a time, so a stopped stage resumes where it was.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from .config import TrainConfig
from .data import Example

logger = logging.getLogger(__name__)

CHUNK = 64  # photos captioned between two writes of the cache (one SDK batch)


def teacher_file(config: TrainConfig) -> Path:
    return config.run_dir / "teacher" / "captions.jsonl"


def _described_file(config: TrainConfig) -> Path:
    return teacher_file(config).with_name("teacher.json")


def described_teacher(config: TrainConfig) -> dict | None:
    """Which bundle taught this run (see ``teacher_captions``), or None if none did yet."""
    path = _described_file(config)
    return json.loads(path.read_text()) if path.exists() else None


def teacher_captions(
    config: TrainConfig, examples: list[Example], progress: bool = True, force: bool = False
) -> dict[str, tuple[str, ...]]:
    """The teacher's ``distill_captions`` best captions of every photo, by image id.

    Photos the teacher cannot read are left out and counted in the log (the student then has
    no caption for them, as a photo without features has none).
    """
    path = teacher_file(config)
    if force:
        path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    _drop_cut_line(path)
    todo = [e for e in examples if e.image_id not in _read(path)]
    if todo:
        _caption(config, todo, len(examples), progress)
    done = _read(path)
    unread = sum(1 for e in examples if not done.get(e.image_id))
    if unread:
        logger.warning("teacher: %d of %d photos could not be captioned", unread, len(examples))
    return {e.image_id: done[e.image_id] for e in examples if done.get(e.image_id)}


def _caption(config: TrainConfig, todo: list[Example], total: int, progress: bool) -> None:
    """Caption ``todo`` with the teacher, appending a line per photo to the cache."""
    from tqdm import tqdm

    from gamelab_caption import Captioner

    teacher = Captioner(config.distill_from)
    beam_size = max(config.beam_size, config.distill_captions)
    manifest = teacher.bundle.manifest
    described = {  # a bundled name can later mean another bundle: say which one taught
        "teacher": teacher.name,
        "description": manifest.get("description"),
        "created": manifest.get("provenance", {}).get("created"),
        "files": manifest.get("files"),
        "beam_size": beam_size,
        "captions_per_photo": config.distill_captions,
    }
    _described_file(config).write_text(json.dumps(described, indent=1) + "\n")
    bar = tqdm(total=total, initial=total - len(todo), disable=not progress)
    bar.set_description(f"teacher {teacher.name}")
    with teacher_file(config).open("a") as cache:
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start : start + CHUNK]
            results = teacher.caption_batch(
                [e.path for e in chunk], beam_size=beam_size, max_length=config.max_words
            )
            for example, result in zip(chunk, results, strict=True):
                texts = [result.text, *(text for text, _ in result.alternatives)]
                row = {
                    "image_id": example.image_id,
                    "captions": texts[: config.distill_captions] if result.text else [],
                    "error": str(result.error or ""),
                }
                cache.write(json.dumps(row) + "\n")
            cache.flush()
            bar.update(len(chunk))
    bar.close()


def _drop_cut_line(path: Path) -> None:
    """A stop mid-write leaves a last line without its newline: cut it, so that the next
    row starts on a line of its own (the photo is captioned again)."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def _read(path: Path) -> dict[str, tuple[str, ...]]:
    if not path.exists():
        return {}
    captions = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            captions[row["image_id"]] = tuple(row["captions"])
    return captions


def distilled(
    examples: list[Example], teacher: dict[str, tuple[str, ...]], keep_human: bool
) -> list[Example]:
    """The training examples with the teacher's captions (and the human ones if
    ``keep_human``); a photo the teacher could not caption keeps only its human captions."""
    result = []
    for example in examples:
        taught = teacher.get(example.image_id, ())
        captions = (*taught, *example.captions) if keep_human or not taught else taught
        result.append(dataclasses.replace(example, captions=captions))
    return result
