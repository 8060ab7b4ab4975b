"""One run's configuration: defaults here, overridden by a YAML file, then by --key=value."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path

from gamelab_caption.bundle import check_animal_threshold
from gamelab_caption.vocabulary import REPEATABLE_WORDS

from .class_head import has_imagenet_head
from .quantize import DECODER_WEIGHTS


@dataclass(frozen=True)
class TrainConfig:
    data: str = "../shared/data/flickr8k"  # dataset folder or COCO captions JSON
    dev_data: str | None = None  # COCO only: dev captions JSON (default: data)
    test_data: str | None = None  # COCO only: test captions JSON (default: data)
    ood_data: str | None = None  # COCO captions JSON scored by `evaluate` only, never tuned on
    images_dir: str | None = None  # default: images/ beside Flickr8k, the JSON's folder for COCO
    output: str = "runs/efficientnet_lite0"  # run folder: features, checkpoints, ONNX, reports
    encoder: str = "efficientnet_lite0"  # key of gamelab_export.encoders.ENCODERS
    encoder_weights: str | None = None  # None: offline weights that packages ship
    train_split: str = "train"  # Flickr8k split names; ignored for COCO JSON
    dev_split: str = "dev"  # model selection and early stopping only
    test_split: str = "test"  # reported, never tuned on
    max_train_images: int | None = None  # cap for smoke tests; None = all
    vocab_min_count: int = 5  # rarer words map to <unk>: ~2,900 words on Flickr8k
    vocab_max_words: int = 5000  # the original tutorial keeps the top 5,000
    max_words: int = 20  # caption length cap (words) in training and decoding
    embedding_dim: int = 256  # word embedding and projected image feature width
    units: int = 512  # GRU state width
    attention_dim: int = 512  # Bahdanau attention hidden width
    dropout: float = 0.3  # before the output layers
    class_input: bool = False  # the decoder also reads the encoder's ImageNet head (Lite only)
    attention_penalty: float = 1.0  # doubly stochastic attention (Show, Attend and Tell)
    label_smoothing: float = 0.0
    batch_size: int = 64
    epochs: int = 20
    learning_rate: float = 1e-3
    lr_decay: float = 0.8  # learning rate multiplied by this each epoch the dev loss stalls
    patience: int = 3  # epochs without dev improvement before stopping
    max_steps_per_epoch: int | None = None  # cap for smoke tests
    seed: int = 0
    # Self-critical sequence training (scst.py), after `train`; 0 epochs skips the stage.
    scst_epochs: int = 0
    scst_learning_rate: float = 5e-5
    scst_samples: int = 5  # captions sampled per image and step, each rewarded by CIDEr-D
    scst_batch_size: int = 50  # images per step
    scst_baseline: str = "mean"  # of the other samples of the image (see scst.py), or "greedy"
    # Sequence-level distillation (distill.py): a bundle (bundled name or folder) captions the
    # training photos and its best beams are the decoder's training captions; None: off.
    distill_from: str | None = None
    distill_captions: int = 3  # the teacher's best beams per photo
    distill_human: bool = False  # also train on the human captions
    decoders: int = 1  # decoders trained with seeds seed, seed+1, ...; averaged at every step
    member_units: str | None = None  # GRU width of each decoder, e.g. "1024,512"; None: units
    feature_batch_size: int = 32  # images per encoder call during feature extraction
    beam_size: int = 3  # evaluation and bundle default
    eval_beam_sizes: str = "1,3,5"  # decodings in the evaluation table (1 = greedy)
    length_penalty: float = 0.7  # score = log_prob / length ** length_penalty, until tuned
    tune_length_penalties: str = "0,0.25,0.4,0.5,0.6,0.75,1,1.5"  # tried on dev by `tune`
    # log-prob off a word a caption already has ("a dog playing with a dog"), until tuned
    repeat_penalty: float = 0.0
    tune_repeat_penalties: str = "0,0.5,1,1.5,2,3"  # tried on dev by `tune`, after the length
    repeatable_words: str = ",".join(REPEATABLE_WORDS)  # spared by the repeat penalty
    # ImageNet head probability at which the SDK renames a caption's animal (animals.py);
    # chosen on the training photos' captions (see the model card); None: no head in bundles
    animal_threshold: float | None = 0.8
    calibration_images: int = 200  # training images for static INT8 calibration (>= 100)
    int8_format: str = "qoperator"  # or "qdq"; QOperator measured faster on this encoder
    decoder_weights: str = "int4"  # 4-bit MatMul weights, or "int8" (dynamic); see quantize.py
    eval_images: int | None = None  # cap on test images for smoke tests; None = all
    bundle_name: str | None = None  # default: encoder name with "-" (efficientnet-lite0)

    def __post_init__(self):
        if self.decoders < 1:
            raise ValueError(f"decoders must be >= 1, got {self.decoders}")
        if self.decoder_weights not in DECODER_WEIGHTS:
            raise ValueError(
                f"decoder_weights must be one of {', '.join(DECODER_WEIGHTS)}, "
                f"got {self.decoder_weights!r}"
            )
        if self.scst_epochs < 0 or self.scst_samples < 1 or self.scst_batch_size < 1:
            raise ValueError(
                "scst_epochs must be >= 0 and scst_samples, scst_batch_size >= 1, got "
                f"{self.scst_epochs}, {self.scst_samples}, {self.scst_batch_size}"
            )
        if self.animal_threshold is not None:
            check_animal_threshold(self.animal_threshold)
        if self.class_input and not has_imagenet_head(self.encoder):
            raise ValueError(f"class_input needs an EfficientNet-Lite encoder, got {self.encoder}")
        if self.distill_captions < 1:
            raise ValueError(f"distill_captions must be >= 1, got {self.distill_captions}")
        if self.scst_baseline not in ("mean", "greedy"):
            raise ValueError(f"scst_baseline must be mean or greedy, got {self.scst_baseline!r}")
        if self.member_units is not None:
            widths = [w.strip() for w in self.member_units.split(",")]
            if len(widths) != self.decoders or not all(w.isdigit() for w in widths):
                raise ValueError(
                    f"member_units must list {self.decoders} positive widths (one per decoder), "
                    f"got {self.member_units!r}"
                )

    @property
    def member_widths(self) -> tuple[int, ...]:
        """The GRU width of each ensemble member."""
        if self.member_units is None:
            return (self.units,) * self.decoders
        return tuple(int(width) for width in self.member_units.split(","))

    @property
    def length_penalties_to_try(self) -> tuple[float, ...]:
        return tuple(float(value) for value in self.tune_length_penalties.split(","))

    @property
    def repeat_penalties_to_try(self) -> tuple[float, ...]:
        return tuple(float(value) for value in self.tune_repeat_penalties.split(","))

    @property
    def repeatable_word_list(self) -> list[str]:
        """The words the repeat penalty spares, as the manifest lists them."""
        return self.repeatable_words.split(",")

    def member(self, index: int) -> TrainConfig:
        """Ensemble member ``index``: its own seed (seed + index) and, if given, GRU width."""
        if not 0 <= index < self.decoders:
            raise IndexError(f"member {index} of {self.decoders} decoders")
        return dataclasses.replace(self, seed=self.seed + index, units=self.member_widths[index])

    @property
    def run_dir(self) -> Path:
        return Path(self.output)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_saved(cls, values: dict) -> TrainConfig:
        """A config as ``to_dict`` wrote it (a run's config.json, a manifest's "config"),
        keys that a later toolchain dropped left out."""
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def _parse_value(name: str, annotation: str, raw: object) -> object:
    """Turn a YAML value or a command-line string into the field's declared type."""
    hint = typing.get_type_hints(TrainConfig)[name]
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null")):
        if type(None) in options:
            return None
        raise ValueError(f"{name} cannot be None")
    for option in options:
        if option is type(None):
            continue
        if option is bool:
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("true", "1", "yes"):
                return True
            if str(raw).lower() in ("false", "0", "no"):
                return False
            continue
        if option is int and isinstance(raw, float):
            continue
        try:
            return option(raw)
        except (TypeError, ValueError):
            continue
    raise ValueError(f"{name}={raw!r} is not a valid {annotation}")


def load_config(yaml_path: str | Path | None = None, overrides: list[str] = ()) -> TrainConfig:
    """Defaults, then a YAML file, then ``--key=value`` overrides; unknown keys are refused."""
    known = {f.name: f for f in fields(TrainConfig)}
    values: dict[str, object] = {}
    if yaml_path is not None:
        import yaml

        loaded = yaml.safe_load(Path(yaml_path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{yaml_path}: expected a mapping of config keys")
        values.update(loaded)
    for item in overrides:
        key, sep, raw = item.removeprefix("--").partition("=")
        if not sep:
            raise ValueError(f"Override {item!r} must look like --key=value")
        values[key.replace("-", "_")] = raw
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"Unknown config keys: {', '.join(unknown)}; expected: {', '.join(known)}")
    parsed = {k: _parse_value(k, str(known[k].type), v) for k, v in values.items()}
    return TrainConfig(**parsed)
