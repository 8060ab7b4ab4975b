"""Self-critical sequence training (Rennie et al., CVPR 2017) of the trained decoders.

Cross-entropy training teaches the next word of human captions; the model is then judged on
whole captions it writes itself. SCST fine-tunes it on its own captions: for each training
image it samples ``scst_samples`` captions, scores each by CIDEr-D against the image's
references (reward.py), and raises the log-probability of those that beat a baseline
(REINFORCE; the baseline is the model's own score, so no value network is learned).

The baseline is by default the mean reward of the image's other samples (Luo, "A Better
Variant of Self-Critical Sequence Training", 2020), not the greedy caption's reward of the
original paper (``scst_baseline=greedy``). On the toy set of tests/export/test_scst.py the
greedy baseline lowered the greedy captions' CIDEr-D (2.21 -> 1.72 after 80 steps) while the
mean baseline raised it (2.21 -> 2.54): a greedy caption beats most samples of a trained
model, so nearly every advantage is negative and the updates mostly push probability away
from what was sampled, wherever it lands; the other samples' mean centres the advantages.
The greedy captions are still decoded at every step, as a measure of test-time quality.

An ensemble is fine-tuned as the one policy the SDK decodes: captions are sampled from the
renormalised mean of its members' log-probabilities and every member gets the gradient. Dev
CIDEr (greedy) selects the epoch; checkpoints are written every ``CHECKPOINT_STEPS`` steps,
and a stopped run resumes at the step it reached (the order of each epoch is seeded).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from gamelab_caption.vocabulary import Vocabulary, tokenize

from .config import TrainConfig
from .reward import CiderD
from .train import (
    dev_bleu4,
    greedy_decoder,
    load_trained_decoder,
    plot_curves,
    scst_dir,
    scst_weights,
    suppression,
)

logger = logging.getLogger(__name__)

CHECKPOINT_STEPS = 20  # steps between resumable checkpoints within an epoch
_SUPPRESSED = -1e9  # logit offset of tokens never generated (finite: no NaN gradients)


def _references(examples) -> list[list[str]]:
    return [[" ".join(tokenize(caption)) for caption in e.captions] for e in examples]


def dev_cider(candidates: list[str], references: list[list[str]]) -> float:
    """Corpus CIDEr-D (x100) on SDK-tokenised text, as pycocoevalcap computes it."""
    from pycocoevalcap.cider.cider import Cider

    gts = dict(enumerate(references))
    res = {i: [c or "<empty>"] for i, c in enumerate(candidates)}
    return 100.0 * Cider().compute_score(gts, res)[0]


def readable_rows(examples, failed: dict[str, str]) -> np.ndarray:
    """Rows of the examples whose image was read: an unreadable one's features are zeros."""
    return np.array([row for row, e in enumerate(examples) if e.image_id not in failed], np.int64)


def _until_end(ids: np.ndarray, end_id: int) -> np.ndarray:
    """(N, T) sampled ids -> (N, T) float mask: every word up to and with the first end."""
    ended = np.cumsum(ids == end_id, axis=1)  # (N, T)
    before = np.concatenate([np.zeros((len(ids), 1)), ended[:, :-1]], axis=1)
    return (before == 0).astype(np.float32)


def _advantage(sampled: np.ndarray, greedy: np.ndarray, baseline: str) -> np.ndarray:
    """Rewards of samples (B * S,), S per image, and of greedy captions (B,) -> how much each
    sample beat its baseline (B * S,) float32."""
    grid = sampled.reshape(len(greedy), -1)  # (B, S)
    if baseline == "greedy":
        return (grid - greedy[:, None]).reshape(-1).astype(np.float32)
    others = (grid.sum(axis=1, keepdims=True) - grid) / max(grid.shape[1] - 1, 1)
    return (grid - others).reshape(-1).astype(np.float32)


def _plot(history: list[dict], path: Path) -> None:
    epochs = [h["epoch"] for h in history]
    trained = [h for h in history if h["sample_reward"] is not None]  # not epoch 0
    rewards = {
        f"{kind} CIDEr-D (train, during the epoch)": (
            [h["epoch"] for h in trained],
            [h[f"{kind}_reward"] for h in trained],
        )
        for kind in ("sample", "greedy")
    }
    dev = {
        "dev CIDEr (greedy)": (epochs, [h["dev_cider"] for h in history]),
        "dev BLEU-4 (greedy)": (epochs, [h["dev_bleu4"] for h in history]),
    }
    plot_curves(path, rewards, dev)


def scst(
    config: TrainConfig,
    vocabulary: Vocabulary,
    train_set,
    dev_set,
    progress: bool = True,
    force: bool = False,
) -> dict:
    """Fine-tune the trained decoder(s) by SCST for ``scst_epochs``; resumes a stopped run.

    ``train_set`` / ``dev_set`` are (examples, FeatureSet) pairs. The best-on-dev weights go
    to ``scst_weights`` (scst/best-<member>.weights.h5), which ``load_trained_decoder``
    then prefers.
    Returns the state: history (rewards, dev CIDEr and BLEU-4 per epoch), best epoch.
    """
    import tensorflow as tf
    from tqdm import tqdm

    folder = scst_dir(config)
    if force:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    state_path = folder / "state.json"
    train_examples, train_features = train_set
    dev_examples, dev_features = dev_set
    images = readable_rows(train_examples, train_features.failed)
    reward = CiderD(_references(train_examples))
    train_array = np.asarray(train_features.features)
    dev_array = np.asarray(dev_features.features).astype(np.float32)
    dev_refs = _references(dev_examples)
    locations, feature_dim = train_array.shape[1:]
    policy = load_trained_decoder(
        config, vocabulary, feature_dim, locations, cross_entropy_only=True
    )
    members = getattr(policy, "members", [policy])
    optimizer = tf.keras.optimizers.Adam(config.scst_learning_rate, clipnorm=5.0)
    checkpoint = tf.train.Checkpoint(
        optimizer=optimizer, **{f"decoder_{i}": m for i, m in enumerate(members)}
    )
    state = {"epoch": 0, "step": 0, "best_epoch": 0, "best_cider": -1.0, "stall": 0,
             "history": [], "running": []}  # fmt: skip
    # epoch 0 in the history: the cross-entropy model, scored before any fine-tuning
    if state_path.exists():
        state = json.loads(state_path.read_text())
        checkpoint.restore(str(folder / "last")).expect_partial()
        logger.info("scst: resuming at epoch %d, step %d", state["epoch"] + 1, state["step"])
    # seeded once, before tracing (a new global seed makes tf.function trace again)
    tf.random.set_seed(config.seed * 100_000 + state["epoch"] * 1000 + state["step"])
    samples, length = config.scst_samples, config.max_words + 1
    suppress = suppression(vocabulary, _SUPPRESSED)
    variables = [v for m in members for v in m.trainable_variables]
    shape = tf.TensorSpec((None, locations, feature_dim), tf.float32)

    def log_probs(logits):
        return tf.nn.log_softmax(logits + suppress)  # an ensemble's mean renormalised too

    @tf.function(input_signature=[shape], autograph=False)  # static Python loops only
    def rollout(features):
        """features (B, L, D) -> greedy ids (B, T), sampled ids (B * samples, T)."""
        count = tf.shape(features)[0]
        tiled = tf.concat([features, tf.repeat(features, samples, axis=0)], axis=0)
        memory, keys, hidden = policy.initial_state(tiled)
        token = tf.fill([tf.shape(tiled)[0]], vocabulary.start_id)
        words = []
        for _ in range(length):
            logits, hidden, _ = policy.step(token, hidden, memory, keys)
            scores = log_probs(logits)
            greedy = tf.argmax(scores[:count], axis=-1, output_type=tf.int32)
            sampled = tf.random.categorical(scores[count:], 1, dtype=tf.int32)[:, 0]
            token = tf.concat([greedy, sampled], axis=0)
            words.append(token)
        ids = tf.stack(words, axis=1)
        return ids[:count], ids[count:]

    @tf.function(
        input_signature=[
            shape,
            tf.TensorSpec((None, length), tf.int32),
            tf.TensorSpec((None, length), tf.float32),
            tf.TensorSpec((None,), tf.float32),
        ],
        autograph=False,
    )
    def policy_step(features, ids, mask, advantage):
        """REINFORCE on sampled ids (B * samples, T): minimise -advantage * log p(caption)."""
        tiled = tf.repeat(features, samples, axis=0)
        inputs = tf.concat([tf.fill([tf.shape(ids)[0], 1], vocabulary.start_id), ids], axis=1)
        with tf.GradientTape() as tape:
            memory, keys, hidden = policy.initial_state(tiled)
            taken = []
            for t in range(length):
                logits, hidden, _ = policy.step(inputs[:, t], hidden, memory, keys)
                taken.append(tf.gather(log_probs(logits), ids[:, t], batch_dims=1))
            chosen = tf.stack(taken, axis=1)  # (N, T)
            loss = -tf.reduce_sum(advantage[:, None] * chosen * mask) / tf.reduce_sum(mask)
        gradients = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(gradients, variables, strict=True))
        return loss

    dev_captions = greedy_decoder(policy, vocabulary, config.max_words)

    def save_progress():
        checkpoint.write(str(folder / "last"))
        state_path.write_text(json.dumps(state, indent=1))

    def evaluate(epoch: int, **record) -> None:
        """Score on dev; keep the weights if best. Epoch 0 is the cross-entropy model."""
        captions = dev_captions(dev_array)
        record = {
            "epoch": epoch,
            **record,
            "dev_cider": dev_cider(captions, dev_refs),
            "dev_bleu4": dev_bleu4(captions, dev_refs),
            "example": captions[0],
        }
        logger.info("scst epoch %d: %s", epoch, record)
        if progress:
            print(json.dumps(record), flush=True)
        state["history"].append(record)
        if record["dev_cider"] > state["best_cider"]:
            state.update(best_cider=record["dev_cider"], best_epoch=epoch, stall=0)
            for member, decoder in enumerate(members):
                decoder.save_weights(str(scst_weights(config, member)))
        else:
            state["stall"] += 1
        state.update(epoch=epoch, step=0, running=[])
        save_progress()
        _plot(state["history"], config.run_dir / "scst_curves.png")

    if not state["history"]:
        evaluate(0, sample_reward=None, greedy_reward=None, seconds=0.0)
    steps = len(images) // config.scst_batch_size or 1
    if config.max_steps_per_epoch:
        steps = min(steps, config.max_steps_per_epoch)
    while state["epoch"] < config.scst_epochs and state["stall"] < config.patience:
        epoch = state["epoch"] + 1
        started = time.time()
        order = np.random.default_rng([config.seed, epoch, 7]).permutation(images)
        bar = tqdm(
            range(state["step"], steps),
            initial=state["step"],
            total=steps,
            desc=f"scst epoch {epoch}",
            disable=not progress,
            unit="step",
        )
        for step in bar:
            batch = order[step * config.scst_batch_size : (step + 1) * config.scst_batch_size]
            features = train_array[batch].astype(np.float32)
            greedy_ids, sampled_ids = (ids.numpy() for ids in rollout(features))
            greedy = reward(batch, [vocabulary.decode(row) for row in greedy_ids])
            repeated = np.repeat(batch, samples)
            sampled = reward(repeated, [vocabulary.decode(row) for row in sampled_ids])
            advantage = _advantage(sampled, greedy, config.scst_baseline)
            mask = _until_end(sampled_ids, vocabulary.end_id)
            policy_step(features, sampled_ids, mask, advantage)
            state["running"].append([float(sampled.mean()), float(greedy.mean())])
            state["step"] = step + 1
            bar.set_postfix(
                reward=f"{np.mean([r[0] for r in state['running'][-20:]]):.3f}",
                greedy=f"{np.mean([r[1] for r in state['running'][-20:]]):.3f}",
            )
            if state["step"] % CHECKPOINT_STEPS == 0:
                save_progress()
        running = np.array(state["running"]).reshape(-1, 2)
        evaluate(
            epoch,
            sample_reward=float(running[:, 0].mean()),
            greedy_reward=float(running[:, 1].mean()),
            seconds=round(time.time() - started, 1),
        )
    return state
