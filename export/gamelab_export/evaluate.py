"""Caption quality on a held-out split: the TF model, and bundles run through the SDK
exactly as users run them. Metrics come from pycocoevalcap (see metrics.py).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gamelab_caption import Captioner
from gamelab_caption.beam_search import beam_search
from gamelab_caption.vocabulary import Vocabulary

from .data import Example
from .metrics import METRICS, markdown_table, score_captions

logger = logging.getLogger(__name__)

BEAM_SIZES = (1, 3, 5)
TEST_DATA = "test"  # the ``data`` of rows scored on the run's test split


def _decoding(beam_size: int) -> str:
    return "greedy" if beam_size == 1 else f"beam {beam_size}"


def _row(
    model: str,
    beam_size: int,
    examples: list[Example],
    captions: list[str],
    seconds: float,
    data: str = TEST_DATA,
) -> dict:
    references = {e.image_id: list(e.captions) for e in examples}
    candidates = dict(zip((e.image_id for e in examples), captions, strict=True))
    scores = score_captions(references, candidates)
    row = {
        "model": model,
        "decoding": _decoding(beam_size),
        "data": data,
        **scores,
        "images": len(examples),
        "seconds": round(seconds, 1),
        "example": captions[0],
    }
    logger.info("%s", row)
    return row


def caption_with_bundle(
    bundle: str | Path,
    examples: list[Example],
    beam_size: int,
    max_length: int | None = None,
    threads: int | None = None,
) -> list[str]:
    """Captions through the SDK exactly as users get them (``caption_batch`` chunks itself)."""
    captioner = Captioner(bundle, threads=threads)
    results = captioner.caption_batch(
        [e.path for e in examples], beam_size=beam_size, max_length=max_length
    )
    for example, result in zip(examples, results, strict=True):
        if result.error is not None:
            logger.warning("No caption for %s: %s", example.path, result.error)
    return [result.text for result in results]


def evaluate_bundle(
    bundle: str | Path,
    label: str,
    examples: list[Example],
    beam_sizes=BEAM_SIZES,
    data: str = TEST_DATA,
) -> list[dict]:
    """One metrics row per beam size; ``data`` names what ``examples`` are (see ``ood_name``)."""
    rows = []
    for beam_size in beam_sizes:
        started = time.time()
        captions = caption_with_bundle(bundle, examples, beam_size)
        rows.append(_row(label, beam_size, examples, captions, time.time() - started, data))
    return rows


def ood_name(path: str | Path) -> str:
    """The ``data`` of rows scored on an out-of-domain COCO file: its folder's name
    (``coco-ood`` for ``../shared/data/coco-ood/captions.json``), or the file's stem."""
    path = Path(path)
    return path.parent.name if path.name == "captions.json" else path.stem


def caption_with_tensorflow(
    decoder,
    features: np.ndarray,
    vocabulary: Vocabulary,
    beam_size: int,
    max_words: int,
    length_penalty: float,
    batch_size: int = 100,
    repeat_penalty: float = 0.0,
    repeatable_words: Sequence[str] = (),
) -> list[str]:
    """The trained Keras decoder under the SDK's own beam search (one decoding code path)."""
    import tensorflow as tf

    repeatable_ids = vocabulary.known_ids(repeatable_words)

    step_function = tf.function(decoder.step, reduce_retracing=True, autograph=False)
    captions = []
    for start in range(0, len(features), batch_size):
        batch = tf.constant(np.asarray(features[start : start + batch_size], np.float32))
        memory, keys, hidden = (x.numpy() for x in decoder.initial_state(batch))

        def step(tokens, state, image_rows, memory=memory, keys=keys):
            logits, next_hidden, attention = step_function(
                tf.constant(tokens), tf.constant(state), memory[image_rows], keys[image_rows]
            )
            return tf.nn.log_softmax(logits).numpy(), next_hidden.numpy(), attention.numpy()

        results = beam_search(
            step,
            hidden,
            start_id=vocabulary.start_id,
            end_id=vocabulary.end_id,
            beam_size=beam_size,
            max_length=max_words + 1,
            length_penalty=length_penalty,
            suppress_ids=vocabulary.never_generated,
            repeat_penalty=repeat_penalty,
            repeatable_ids=repeatable_ids,
        )
        captions.extend(vocabulary.decode(h[0].tokens) if h else "" for h in results)
    return captions


def evaluate_tensorflow(
    decoder,
    features: np.ndarray,
    vocabulary: Vocabulary,
    examples: list[Example],
    max_words: int,
    length_penalty: float,
    beam_sizes=BEAM_SIZES,
    repeat_penalty: float = 0.0,
    repeatable_words: Sequence[str] = (),
) -> list[dict]:
    rows = []
    for beam_size in beam_sizes:
        started = time.time()
        captions = caption_with_tensorflow(
            decoder,
            features,
            vocabulary,
            beam_size,
            max_words,
            length_penalty,
            repeat_penalty=repeat_penalty,
            repeatable_words=repeatable_words,
        )
        rows.append(_row("TensorFlow FP32", beam_size, examples, captions, time.time() - started))
    return rows


def write_report(rows: list[dict], folder: str | Path) -> tuple[Path, Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / "metrics.json"
    json_path.write_text(json.dumps(rows, indent=1) + "\n")
    table = markdown_table(rows, ["model", "decoding", "data", *METRICS, "seconds"])
    markdown_path = folder / "metrics.md"
    markdown_path.write_text(table + "\n")
    return json_path, markdown_path


def tune_decoding(
    bundle: str | Path,
    examples: list[Example],
    length_penalties: tuple[float, ...],
    repeat_penalties: tuple[float, ...],
    beam_size: int,
    max_length: int | None = None,
) -> dict:
    """Pick the beam search's length penalty, then at that its repeat penalty, each with the
    best BLEU-4 on ``examples`` (the dev split); ties go to the smaller value.

    Returns:
        {"length_penalty": best, "dev_bleu4": {value: BLEU-4}, "repeat_penalty": best,
        "dev_bleu4_repeat": {value: BLEU-4}, "beam_size": ...}
    """
    from .train import dev_bleu4

    captioner = Captioner(bundle)
    paths = [e.path for e in examples]
    references = [e.captions for e in examples]
    scores: dict[tuple[float, float], float] = {}  # (length, repeat) -> dev BLEU-4

    def bleu(length: float, repeat: float) -> float:
        if (length, repeat) not in scores:
            results = captioner.caption_batch(
                paths,
                beam_size=beam_size,
                max_length=max_length,
                length_penalty=length,
                repeat_penalty=repeat,
            )
            scores[length, repeat] = round(dev_bleu4([r.text for r in results], references), 2)
            logger.info(
                "penalties %.2f, %.2f: dev BLEU-4 %.2f", length, repeat, scores[length, repeat]
            )
        return scores[length, repeat]

    length_scores = {value: bleu(value, 0.0) for value in length_penalties}
    length = max(length_scores, key=lambda value: (length_scores[value], -value))
    repeat_scores = {value: bleu(length, value) for value in repeat_penalties}  # 0: decoded
    repeat = max(repeat_scores, key=lambda value: (repeat_scores[value], -value))
    return {
        "length_penalty": length,
        "dev_bleu4": length_scores,
        "repeat_penalty": repeat,
        "dev_bleu4_repeat": repeat_scores,
        "beam_size": beam_size,
    }
