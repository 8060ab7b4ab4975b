"""Decoder training on cached features: teacher forcing, masked cross-entropy, Adam,
per-epoch checkpoints that resume, learning-rate decay and early stopping on the dev split.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from gamelab_caption.vocabulary import Vocabulary, tokenize

from .captions import encode_captions
from .config import TrainConfig
from .decoder import CaptionDecoder, DecoderEnsemble, build_decoder

logger = logging.getLogger(__name__)


def _loss_fn(tf, config: TrainConfig):
    def loss(logits, attention, targets):
        """logits (N, T, V), attention (N, T, L), targets (N, T) -> scalar loss, token nll."""
        mask = tf.cast(targets != 0, tf.float32)  # (N, T): pad is id 0
        log_probs = tf.nn.log_softmax(logits)  # (N, T, V)
        nll = -tf.gather(log_probs, targets, batch_dims=2)  # (N, T)
        per_token = nll
        if config.label_smoothing:
            smooth = -tf.reduce_mean(log_probs, axis=-1)  # (N, T)
            per_token = (1 - config.label_smoothing) * nll + config.label_smoothing * smooth
        tokens = tf.reduce_sum(mask)
        total = tf.reduce_sum(per_token * mask) / tokens
        if config.attention_penalty:
            coverage = tf.reduce_sum(attention * mask[:, :, None], axis=1)  # (N, L)
            total += config.attention_penalty * tf.reduce_mean((1.0 - coverage) ** 2)
        return total, tf.reduce_sum(nll * mask) / tokens

    return loss


def greedy_decoder(decoder, vocabulary: Vocabulary, max_words: int, batch_size: int = 250):
    """A function: features (N, L, D) -> greedy captions in TensorFlow, batched; traced once,
    so that model selection after every epoch does not trace it again."""
    import tensorflow as tf

    suppress = suppression(vocabulary)

    @tf.function(reduce_retracing=True, autograph=False)  # static Python loops only
    def run(batch):
        memory, keys, hidden = decoder.initial_state(batch)
        token = tf.fill([tf.shape(batch)[0]], vocabulary.start_id)
        words = []
        for _ in range(max_words + 1):
            logits, hidden, _ = decoder.step(token, hidden, memory, keys)
            token = tf.argmax(logits + suppress, axis=-1, output_type=tf.int32)
            words.append(token)
        return tf.stack(words, axis=1)

    def decode(features: np.ndarray) -> list[str]:
        captions = []
        for start in range(0, len(features), batch_size):
            ids = run(tf.constant(features[start : start + batch_size], tf.float32)).numpy()
            captions.extend(vocabulary.decode(row) for row in ids)
        return captions

    return decode


def dev_bleu4(candidates: list[str], references: list[tuple[str, ...]]) -> float:
    """BLEU-4 (x100) on SDK-tokenised text; cheap enough to run every epoch."""
    from pycocoevalcap.bleu.bleu import Bleu

    gts = {i: [" ".join(tokenize(r)) for r in refs] for i, refs in enumerate(references)}
    res = {i: [c or "<empty>"] for i, c in enumerate(candidates)}
    scores, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return 100.0 * scores[3]


def plot_curves(path: Path, left: dict[str, tuple], right: dict[str, tuple]) -> None:
    """Two panels of per-epoch curves: label -> (epochs, values) on each side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, curves in zip(axes, (left, right), strict=True):
        for label, (epochs, values) in curves.items():
            axis.plot(epochs, values, "o-", label=label)
        axis.set_xlabel("epoch")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _plot(history: list[dict], path: Path) -> None:
    epochs = [h["epoch"] for h in history]
    left = {
        "train loss": (epochs, [h["train_loss"] for h in history]),
        "dev nll": (epochs, [h["dev_nll"] for h in history]),
    }
    plot_curves(path, left, {"dev BLEU-4 (greedy)": (epochs, [h["dev_bleu4"] for h in history])})


def suppression(vocabulary: Vocabulary, value: float = -np.inf) -> np.ndarray:
    """(V,) logit offsets: ``value`` for the tokens never generated (<pad>, <start>, <unk>,
    as the SDK), 0 elsewhere."""
    offsets = np.zeros(len(vocabulary), np.float32)
    offsets[list(vocabulary.never_generated)] = value
    return offsets


def _member_suffix(member: int) -> str:
    """Member 0 of an ensemble keeps the single-decoder file names."""
    return "" if member == 0 else f"-{member}"


def checkpoint_dir(config: TrainConfig, member: int = 0) -> Path:
    return config.run_dir / f"checkpoints{_member_suffix(member)}"


def scst_dir(config: TrainConfig) -> Path:
    """Where the scst stage (scst.py) keeps its checkpoints and fine-tuned weights."""
    return config.run_dir / "scst"


def scst_weights(config: TrainConfig, member: int) -> Path:
    """Member ``member``'s best-on-dev weights after SCST."""
    return scst_dir(config) / f"best-{member}.weights.h5"


def train(
    config: TrainConfig,
    vocabulary: Vocabulary,
    train_set,
    dev_set,
    progress: bool = True,
    member: int = 0,
    force: bool = False,
) -> dict:
    """Train (or resume) one decoder; keeps its best-on-dev weights in checkpoint_dir/best.

    ``train_set`` / ``dev_set`` are (examples, FeatureSet) pairs. Ensemble member ``member``
    differs from member 0 by its seed and, with ``member_units``, its width (``config.member``).
    ``force`` deletes the member's checkpoints first, so training starts again at epoch 1.
    Returns the training state: history, best epoch and its dev BLEU-4.
    """
    import tensorflow as tf
    from tqdm import tqdm

    config = config.member(member)
    tf.random.set_seed(config.seed)
    folder = checkpoint_dir(config, member)
    if force:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    state_path = folder / "state.json"
    train_examples, train_features = train_set
    dev_examples, dev_features = dev_set
    tokens, rows = encode_captions(
        train_examples, vocabulary, config.max_words, set(train_features.failed)
    )
    dev_tokens, dev_rows = encode_captions(
        dev_examples, vocabulary, config.max_words, set(dev_features.failed)
    )
    train_array = np.asarray(train_features.features)  # float16 in RAM: ~0.75 GB for Flickr8k
    dev_array = np.asarray(dev_features.features)
    locations, feature_dim = train_array.shape[1:]
    decoder = build_decoder(config, len(vocabulary), feature_dim, locations)
    optimizer = tf.keras.optimizers.Adam(config.learning_rate, clipnorm=5.0)
    checkpoint = tf.train.Checkpoint(decoder=decoder, optimizer=optimizer)
    state = {
        "epoch": 0,
        "best_epoch": 0,
        "best_bleu4": -1.0,
        "stall": 0,
        "learning_rate": config.learning_rate,
        "history": [],
    }
    if state_path.exists():
        state = json.loads(state_path.read_text())
        checkpoint.restore(str(folder / "last")).expect_partial()
        logger.info("Resuming after epoch %d", state["epoch"])
    optimizer.learning_rate.assign(state["learning_rate"])
    loss_fn = _loss_fn(tf, config)
    shape = tf.TensorSpec((None, locations, feature_dim), tf.float32)
    token_shape = tf.TensorSpec((None, config.max_words + 2), tf.int32)

    @tf.function(input_signature=[shape, token_shape], autograph=False)
    def train_step(features, caption_tokens):
        with tf.GradientTape() as tape:
            logits, attention = decoder((features, caption_tokens[:, :-1]), training=True)
            loss, nll = loss_fn(logits, attention, caption_tokens[:, 1:])
        gradients = tape.gradient(loss, decoder.trainable_variables)
        optimizer.apply_gradients(zip(gradients, decoder.trainable_variables, strict=True))
        return loss

    @tf.function(input_signature=[shape, token_shape], autograph=False)
    def dev_step(features, caption_tokens):
        logits, attention = decoder((features, caption_tokens[:, :-1]), training=False)
        return loss_fn(logits, attention, caption_tokens[:, 1:])[1]

    dev_refs = [e.captions for e in dev_examples]
    dev_captions = greedy_decoder(decoder, vocabulary, config.max_words)
    while state["epoch"] < config.epochs and state["stall"] < config.patience:
        epoch = state["epoch"] + 1
        started = time.time()
        order = np.random.default_rng([config.seed, epoch]).permutation(len(tokens))
        steps = len(order) // config.batch_size
        if config.max_steps_per_epoch:
            steps = min(steps, config.max_steps_per_epoch)
        losses = []
        bar = tqdm(range(steps), desc=f"epoch {epoch}", disable=not progress, unit="batch")
        for step in bar:
            batch = order[step * config.batch_size : (step + 1) * config.batch_size]
            losses.append(
                float(train_step(train_array[rows[batch]].astype(np.float32), tokens[batch]))
            )
            if step % 20 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        dev_nll = np.mean(
            [
                float(
                    dev_step(
                        dev_array[dev_rows[s : s + 500]].astype(np.float32), dev_tokens[s : s + 500]
                    )
                )
                for s in range(0, len(dev_tokens), 500)
            ]
        )
        captions = dev_captions(dev_array.astype(np.float32))
        bleu4 = dev_bleu4(captions, dev_refs)
        record = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            "dev_nll": float(dev_nll),
            "dev_bleu4": bleu4,
            "learning_rate": state["learning_rate"],
            "seconds": round(time.time() - started, 1),
            "example": captions[0],
        }
        logger.info("epoch %d: %s", epoch, record)
        if progress:
            print(json.dumps(record), flush=True)
        state["history"].append(record)
        if bleu4 > state["best_bleu4"]:
            state.update(best_bleu4=bleu4, best_epoch=epoch, stall=0)
            decoder.save_weights(str(folder / "best.weights.h5"))
        else:
            state["stall"] += 1
            state["learning_rate"] *= config.lr_decay
            optimizer.learning_rate.assign(state["learning_rate"])
        state["epoch"] = epoch
        checkpoint.write(str(folder / "last"))
        state_path.write_text(json.dumps(state, indent=1))
        _plot(state["history"], config.run_dir / f"training_curves{_member_suffix(member)}.png")
    return state


def load_trained_decoder(
    config: TrainConfig,
    vocabulary: Vocabulary,
    feature_dim: int,
    locations: int,
    *,
    cross_entropy_only: bool = False,
) -> CaptionDecoder | DecoderEnsemble:
    """The decoder of a finished run, an ensemble of them if ``decoders`` > 1: the SCST
    fine-tuned weights when the run has ``scst_epochs`` (unless ``cross_entropy_only``), else
    the best-on-dev weights of ``train``."""
    fine_tuned = config.scst_epochs > 0 and not cross_entropy_only
    members = []
    for member in range(config.decoders):
        weights = checkpoint_dir(config, member) / "best.weights.h5"
        if fine_tuned:
            weights = scst_weights(config, member)
        if not weights.exists():
            stage = "scst" if fine_tuned else "train"
            raise FileNotFoundError(
                f"No {stage} decoder {member} in {config.run_dir}: run `gamelab-export {stage}`"
            )
        decoder = build_decoder(config.member(member), len(vocabulary), feature_dim, locations)
        decoder.load_weights(str(weights))
        members.append(decoder)
    return members[0] if len(members) == 1 else DecoderEnsemble(members)
