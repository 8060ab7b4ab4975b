"""The stages of a run. Each reads the previous stage's files from the run folder, skips
itself when its own outputs exist (so a stopped run resumes), and can be forced to redo.

    teach -> prepare -> features -> train -> scst -> export -> quantize -> bundle -> tune
    -> evaluate

``teach`` does something only when distilling (``distill_from``): the decoder then trains on
the teacher's captions, and the vocabulary is built from them.
"""

from __future__ import annotations

import json
import logging
import shutil
from datetime import datetime, timezone
from pathlib import Path

from gamelab_caption.bundle import DECODER_INIT, DECODER_STEP, ENCODER, GRAPHS, write_manifest
from gamelab_caption.version import __version__
from gamelab_caption.vocabulary import SPECIAL_TOKENS, Vocabulary

from .class_head import give_class_head
from .config import TrainConfig
from .data import load_dataset
from .distill import described_teacher
from .encoders import encoder_spec
from .quantize import QUANTIZATION, calibration_sample, quantize_decoder, quantize_encoder
from .raw_pixels import input_dtype, take_raw_pixels

logger = logging.getLogger(__name__)

STAGES = (
    "teach",
    "prepare",
    "features",
    "train",
    "scst",
    "export",
    "quantize",
    "bundle",
    "tune",
    "evaluate",
)
PROGRESS_STAGES = (
    "teach",
    "features",
    "train",
    "scst",
    "evaluate",
)  # those taking ``progress`` (bars, epochs)
GRAPH_FILES = {graph: f"{graph}.onnx" for graph in GRAPHS}
FLICKR8K_LICENCE = (
    "Flickr8k: research use only (University of Illinois terms); images "
    "belong to their Flickr authors. Models trained on it are research artefacts."
)


def load_split(config: TrainConfig, role: str) -> tuple[list, object]:
    """Examples of one role ("train", "dev", "test") and their LoadReport.

    Flickr8k folders are split by their split files; a COCO JSON is one split, so dev and
    test come from ``dev_data`` / ``test_data`` (default: the training file itself).
    The train split is capped by ``max_train_images``, dev and test by ``eval_images``.
    """
    source = {"train": config.data, "dev": config.dev_data, "test": config.test_data}[role]
    source = source or config.data
    split = None if str(source).endswith(".json") else getattr(config, f"{role}_split")
    examples, report = load_dataset(source, split, images_dir=config.images_dir)
    logger.info("%s", report.summary())
    cap = config.max_train_images if role == "train" else config.eval_images
    return (examples[:cap] if cap else examples), report


def _splits(config: TrainConfig) -> dict:
    return {role: load_split(config, role) for role in ("train", "dev", "test")}


def bundle_name(config: TrainConfig) -> str:
    return config.bundle_name or config.encoder.replace("_", "-")


def teach(config: TrainConfig, force: bool = False, progress: bool = True) -> dict | None:
    """The ``distill_from`` bundle's captions of the training photos (None when not
    distilling), cached in the run folder; ``force`` captions them again."""
    if config.distill_from is None:
        logger.info("teach: no distill_from, skipping")
        return None
    from .distill import teacher_captions

    return teacher_captions(config, load_split(config, "train")[0], progress, force)


def _taught(config: TrainConfig, examples: list, progress: bool = True) -> list:
    """The training examples with the captions the decoder trains on: the teacher's when
    distilling (and the human ones with ``distill_human``), else their own."""
    if config.distill_from is None:
        return examples
    from .distill import distilled, teacher_captions

    taught = teacher_captions(config, examples, progress)  # cached by teach: read back
    return distilled(examples, taught, config.distill_human)


def prepare(config: TrainConfig, force: bool = False) -> None:
    folder = config.run_dir
    vocab_path = folder / "vocab.json"
    if vocab_path.exists() and not force:
        logger.info("prepare: %s exists, skipping", vocab_path)
        return
    folder.mkdir(parents=True, exist_ok=True)
    splits = _splits(config)
    train_examples = _taught(config, splits["train"][0])
    vocabulary = Vocabulary.build(
        (c for e in train_examples for c in e.captions),
        min_count=config.vocab_min_count,
        max_words=config.vocab_max_words,
    )
    vocabulary.save(vocab_path)
    config.save(folder / "config.json")
    (folder / "data_report.json").write_text(
        json.dumps({role: report.summary() for role, (_, report) in splits.items()}, indent=1)
        + "\n"
    )
    logger.info("prepare: %d words in the vocabulary", len(vocabulary))


def features(config: TrainConfig, force: bool = False, progress: bool = True) -> dict:
    """Encoder features of every split, extracted once (``force`` extracts them again)."""
    from .features import extract_features

    result = {}
    for role, (examples, _) in _splits(config).items():
        result[role] = (
            examples,
            extract_features(
                examples,
                role,
                config.run_dir / "features",
                config.encoder,
                config.encoder_weights,
                config.feature_batch_size,
                progress=progress,
                force=force,
            ),
        )
    return result


def train(config: TrainConfig, force: bool = False, progress: bool = True) -> dict:
    """Train the decoders, resuming a stopped run (``force`` trains them again from epoch 1).

    The stages before are run as needed, never forced.
    """
    return _train(config, *_training_data(config, progress), force, progress)


def _training_data(config: TrainConfig, progress: bool) -> tuple[Vocabulary, dict]:
    """The vocabulary and the feature sets (human captions), prepared and extracted if not
    yet done."""
    prepare(config)
    sets = features(config, progress=progress)
    return Vocabulary.load(config.run_dir / "vocab.json"), sets


def _train(config: TrainConfig, vocabulary, sets: dict, force: bool, progress: bool) -> dict:
    from .train import train as train_decoder

    examples, extracted = sets["train"]  # distilling: the teacher's captions are the targets
    sets = {**sets, "train": (_taught(config, examples, progress), extracted)}
    states = [
        train_decoder(config, vocabulary, sets["train"], sets["dev"], progress, member, force=force)
        for member in range(config.decoders)
    ]
    config.save(config.run_dir / "config.json")  # what trained these checkpoints, e.g. decoders
    return states[0] if len(states) == 1 else {"members": states}


def scst(config: TrainConfig, force: bool = False, progress: bool = True) -> dict | None:
    """Fine-tune the trained decoders by self-critical sequence training (``scst_epochs``;
    0 skips), resuming a stopped run (``force`` starts again from the trained decoders).
    The decoders are trained first if they are not yet."""
    if config.scst_epochs == 0:
        logger.info("scst: scst_epochs is 0, skipping")
        return None
    from .scst import scst as fine_tune

    vocabulary, sets = _training_data(config, progress)
    _train(config, vocabulary, sets, False, progress)  # trained: returns at once
    # The reward is CIDEr-D against the human captions, also when the decoder was distilled.
    return fine_tune(config, vocabulary, sets["train"], sets["dev"], progress, force=force)


def _trained_decoder(config: TrainConfig):
    from .train import load_trained_decoder

    spec = encoder_spec(config.encoder, config.encoder_weights)
    vocabulary = Vocabulary.load(config.run_dir / "vocab.json")
    return load_trained_decoder(config, vocabulary, spec.feature_dim, spec.grid[0] * spec.grid[1])


def export(config: TrainConfig, force: bool = False) -> None:
    from .convert import export_decoder, export_encoder
    from .encoders import build_encoder

    folder = config.run_dir / "onnx"
    if all((folder / f).exists() for f in GRAPH_FILES.values()) and not force:
        logger.info("export: %s holds the ONNX graphs, skipping", folder)
        return
    spec = encoder_spec(config.encoder, config.encoder_weights)
    encoder_path = folder / GRAPH_FILES[ENCODER]
    # The encoder does not depend on training: a run that only retrains decoders keeps it.
    if force or not encoder_path.exists():
        export_encoder(build_encoder(config.encoder, config.encoder_weights), spec, encoder_path)
    export_decoder(
        _trained_decoder(config),
        spec.grid[0] * spec.grid[1],
        spec.feature_dim,
        folder / GRAPH_FILES[DECODER_INIT],
        folder / GRAPH_FILES[DECODER_STEP],
    )


def quantize(config: TrainConfig, force: bool = False) -> None:
    """Each graph is quantised unless its quantised file exists (``force`` redoes all), so a
    changed decoder quantisation can be redone without touching the calibrated encoder."""
    folder = config.run_dir / "onnx"
    targets = {g: folder / f.replace(".onnx", ".int8.onnx") for g, f in GRAPH_FILES.items()}
    todo = [graph for graph, target in targets.items() if force or not target.exists()]
    if not todo:
        logger.info("quantize: INT8 graphs exist, skipping")
        return
    if ENCODER in todo:
        spec = encoder_spec(config.encoder, config.encoder_weights)
        train_examples, _ = load_split(config, "train")
        calibration = calibration_sample(
            [e.path for e in train_examples], config.calibration_images, config.seed
        )
        quantize_encoder(
            folder / GRAPH_FILES[ENCODER],
            targets[ENCODER],
            calibration,
            spec.image,
            config.int8_format,
        )
        if take_raw_pixels(targets[ENCODER], spec.image):
            logger.info("quantize: the INT8 encoder takes uint8 pixels (raw_pixels)")
    for graph in (DECODER_INIT, DECODER_STEP):
        if graph in todo:
            quantize_decoder(folder / GRAPH_FILES[graph], targets[graph], config.decoder_weights)


def _manifest(
    config: TrainConfig, precision: str, metrics: list[dict] | None, pixels: str = "float32"
) -> dict:
    """``pixels``: the dtype the bundle's encoder graph takes (see ``raw_pixels``)."""
    spec = encoder_spec(config.encoder, config.encoder_weights)
    decoders = (
        "Bahdanau-attention GRU decoder"
        if config.decoders == 1
        else f"ensemble of {config.decoders} Bahdanau-attention GRU decoders"
    )
    provenance = {
        "training_data": str(config.data),
        "training_data_licence": FLICKR8K_LICENCE,
        "encoder_weights": spec.weights_source
        if config.encoder_weights is None
        else str(config.encoder_weights),
        "encoder_weights_licence": spec.licence,
        "toolchain": f"gamelab-caption-sdk {__version__}",
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    taught_by = described_teacher(config) if config.distill_from is not None else None
    if taught_by is not None:
        provenance["teacher"] = taught_by
        decoders += f" distilled from bundle {taught_by['teacher']} ({taught_by['created']})"
    if config.scst_epochs:
        decoders += ", fine-tuned by SCST"
    return {
        "name": bundle_name(config),
        "description": f"{spec.name} encoder + {decoders}, {precision}",
        "precision": precision,
        "quantization": "none" if precision == "fp32" else QUANTIZATION[config.decoder_weights],
        "encoder": {
            "name": spec.name,
            "image": {**spec.image.to_dict(), "dtype": pixels},
            "grid": list(spec.grid),
            "feature_dim": spec.feature_dim,
        },
        "graphs": dict(GRAPH_FILES),
        "vocabulary": "vocab.json",
        "special_tokens": list(SPECIAL_TOKENS),
        "decoding": _decoding(config),
        "provenance": provenance,
        "config": config.to_dict(),
        "metrics": metrics or [],
    }


def bundle_dirs(config: TrainConfig) -> dict[str, Path]:
    root = config.run_dir / "bundles"
    return {"fp32": root / f"{bundle_name(config)}-fp32", "int8": root / bundle_name(config)}


def bundle(config: TrainConfig, force: bool = False, metrics: list[dict] | None = None) -> None:
    onnx_folder = config.run_dir / "onnx"
    report = config.run_dir / "eval" / "metrics.json"
    rewrite = force or metrics is not None
    if metrics is None and report.exists():  # rebundling keeps the measured table
        metrics = json.loads(report.read_text())
    for precision, folder in bundle_dirs(config).items():
        if (folder / "manifest.json").exists() and not rewrite:
            logger.info("bundle: %s exists, skipping", folder)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        for name in GRAPH_FILES.values():
            source = name if precision == "fp32" else name.replace(".onnx", ".int8.onnx")
            shutil.copyfile(onnx_folder / source, folder / name)
        shutil.copyfile(config.run_dir / "vocab.json", folder / "vocab.json")
        pixels = input_dtype(folder / GRAPH_FILES[ENCODER])
        manifest = _manifest(config, precision, metrics, pixels)
        bits = None if precision == "fp32" else 4
        give_class_head(folder / GRAPH_FILES[ENCODER], manifest, config, bits)
        write_manifest(folder, manifest)
        logger.info("bundle: wrote %s", folder)


def _decoding(config: TrainConfig) -> dict:
    """The manifest's decoding settings: the penalties tuned on dev once ``tune`` ran (each
    that it tuned: a run tuned before the repeat penalty existed keeps the configured one),
    else the configured ones."""
    tuned_path = config.run_dir / "eval" / "tune.json"
    tuned = json.loads(tuned_path.read_text()) if tuned_path.exists() else {}
    return {
        "max_length": config.max_words,
        "length_penalty": tuned.get("length_penalty", config.length_penalty),
        "beam_size": config.beam_size,
        "repeat_penalty": tuned.get("repeat_penalty", config.repeat_penalty),
        "repeatable_words": config.repeatable_word_list,
    }


def tune(config: TrainConfig, force: bool = False) -> dict:
    """Choose the length and repeat penalties on the dev split (INT8 bundle, beam
    ``beam_size``)."""
    from .evaluate import tune_decoding

    target = config.run_dir / "eval" / "tune.json"
    if target.exists() and not force:
        logger.info("tune: %s exists, skipping", target)
        return json.loads(target.read_text())
    dev_examples, _ = load_split(config, "dev")
    result = tune_decoding(
        bundle_dirs(config)["int8"],
        dev_examples,
        config.length_penalties_to_try,
        config.repeat_penalties_to_try,
        config.beam_size,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=1) + "\n")
    bundle(config, force=True)  # the chosen penalties go into both manifests
    return result


def evaluate(config: TrainConfig, force: bool = False, progress: bool = True) -> list[dict]:
    from .evaluate import evaluate_bundle, evaluate_tensorflow, ood_name, write_report

    report = config.run_dir / "eval" / "metrics.json"
    if report.exists() and not force:
        logger.info("evaluate: %s exists, skipping", report)
        return json.loads(report.read_text())
    beam_sizes = tuple(int(size) for size in config.eval_beam_sizes.split(","))
    test_examples, test_features = features(config, progress=progress)["test"]
    vocabulary = Vocabulary.load(config.run_dir / "vocab.json")
    decoding = _decoding(config)
    rows = evaluate_tensorflow(
        _trained_decoder(config),
        test_features.features,
        vocabulary,
        test_examples,
        config.max_words,
        decoding["length_penalty"],
        beam_sizes,
        repeat_penalty=decoding["repeat_penalty"],
        repeatable_words=decoding["repeatable_words"],
    )
    for precision, folder in bundle_dirs(config).items():
        rows += evaluate_bundle(folder, f"ONNX {precision.upper()}", test_examples, beam_sizes)
    if config.ood_data:  # captions outside the training data's world: the shipped bundle
        ood_examples, report = load_dataset(config.ood_data)
        logger.info("%s", report.summary())
        name = ood_name(config.ood_data)
        beam = (config.beam_size,)
        rows += evaluate_bundle(bundle_dirs(config)["int8"], "ONNX INT8", ood_examples, beam, name)
    write_report(rows, config.run_dir / "eval")
    bundle(config, metrics=rows)  # the measured table goes into both manifests
    return rows


def run_stage(stage: str, config: TrainConfig, force: bool = False, progress: bool = True):
    """Run one of ``STAGES`` by name; ``progress`` reaches those in ``PROGRESS_STAGES``."""
    if stage not in STAGES:
        raise ValueError(f"Invalid stage {stage!r}, expected one of: {', '.join(STAGES)}")
    options = {"progress": progress} if stage in PROGRESS_STAGES else {}
    return globals()[stage](config, force, **options)


def run_all(config: TrainConfig, force: bool = False, progress: bool = True) -> None:
    """Every stage in order, each skipped when done unless ``force``."""
    for stage in STAGES:
        run_stage(stage, config, force, progress)
