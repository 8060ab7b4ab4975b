"""Encoder features, extracted once, stored float16 on disk, memory-mapped for training.

Extraction is resumable: rows are written in order into a preallocated ``.npy`` and a small
progress file records how many are done, so a killed run continues where it stopped.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gamelab_caption.errors import ImageError
from gamelab_caption.preprocessing import preprocess

from .data import Example
from .encoders import build_encoder, encoder_spec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureSet:
    """Features of one split.

    Attributes:
        image_ids: ids in row order.
        features: (N, L, D) float16, memory-mapped.
        failed: ids whose image could not be read (their rows are zeros), with the reason.
    """

    image_ids: list[str]
    features: np.ndarray
    failed: dict[str, str]


def _paths(folder: Path, split: str) -> tuple[Path, Path]:
    return folder / f"{split}.npy", folder / f"{split}.progress.json"


def extract_features(
    examples: list[Example],
    split: str,
    folder: str | Path,
    encoder: str,
    weights: str | None = None,
    batch_size: int = 32,
    progress: bool = True,
    force: bool = False,
) -> FeatureSet:
    """Run the frozen encoder over ``examples``, resuming if a previous run stopped (or
    returning its features if it finished); ``force`` starts over instead."""
    from tqdm import tqdm

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    array_path, progress_path = _paths(folder, split)
    spec = encoder_spec(encoder, weights)
    ids = [e.image_id for e in examples]
    shape = (len(examples), spec.grid[0] * spec.grid[1], spec.feature_dim)
    state = {"ids": ids, "done": 0, "failed": {}, "encoder": encoder, "weights": weights}
    if force:  # first, so that a run killed before its first batch does not look finished
        progress_path.unlink(missing_ok=True)
    if progress_path.exists() and array_path.exists():
        previous = json.loads(progress_path.read_text())
        if {k: previous[k] for k in ("ids", "encoder", "weights")} == {
            k: state[k] for k in ("ids", "encoder", "weights")
        }:
            state = previous
    if state["done"] == 0 or not array_path.exists():
        features = np.lib.format.open_memmap(array_path, mode="w+", dtype=np.float16, shape=shape)
    else:
        features = np.load(array_path, mmap_mode="r+")
    if state["done"] < len(ids):
        import tensorflow as tf

        model = build_encoder(encoder, weights)
        # Compiled: about 6x faster than eager calls on CPU.
        run_encoder = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True)
        bar = tqdm(
            total=len(ids),
            initial=state["done"],
            desc=f"features {split}",
            unit="img",
            disable=not progress,
        )
        for start in range(state["done"], len(ids), batch_size):
            batch = examples[start : start + batch_size]
            pixels = np.zeros((len(batch), *spec.image.size, 3), np.float32)
            for row, example in enumerate(batch):
                try:
                    pixels[row] = preprocess(example.path, spec.image)
                except ImageError as error:
                    state["failed"][example.image_id] = str(error)
                    logger.warning("Skipping unreadable image %s: %s", example.path, error)
            output = run_encoder(pixels).numpy()  # (n, h, w, D)
            features[start : start + len(batch)] = output.reshape(len(batch), *shape[1:])
            for example in batch:
                if example.image_id in state["failed"]:
                    features[start + batch.index(example)] = 0
            features.flush()
            state["done"] = start + len(batch)
            progress_path.write_text(json.dumps(state))
            bar.update(len(batch))
        bar.close()
    if state["failed"]:
        logger.warning(
            "%d of %d images in %s could not be read", len(state["failed"]), len(ids), split
        )
    return FeatureSet(ids, np.load(array_path, mmap_mode="r"), dict(state["failed"]))
