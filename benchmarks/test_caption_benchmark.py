"""End to end, file on disk to caption: the SDK against the TensorFlow pipeline it replaces.

Every pipeline starts from the image file and goes through the same preprocessing
(``gamelab_caption.preprocessing``, which training used too), with the same trained weights
and the same thread count. The TensorFlow baselines:

- tf-eager: the original tutorial's way. The Keras encoder and the decoder are called eagerly
  and greedy decoding is a Python loop that stops when every caption has ended.
- tf-compiled: TensorFlow at its best. The encoder and a whole greedy decode (a
  ``tf.while_loop`` that stops when every caption has ended) are one ``tf.function``.

Shapes: N images, h x w feature grid, L = h * w locations, D channels, T decoded steps.
"""

from __future__ import annotations

import numpy as np
import pytest

from gamelab_caption.preprocessing import preprocess

TF_ENCODER_ROUNDS = 5


class TensorFlowPipeline:
    """The trained Keras encoder and decoder of one run, called eagerly or compiled."""

    def __init__(self, tf, run):
        from gamelab_caption.vocabulary import Vocabulary
        from gamelab_export.encoders import build_encoder, encoder_spec
        from gamelab_export.train import load_trained_decoder

        config = run.config
        self.tf = tf
        self.spec = encoder_spec(config.encoder, config.encoder_weights)
        self.locations = self.spec.grid[0] * self.spec.grid[1]
        self.vocabulary = Vocabulary.load(run.path / "vocab.json")
        self.encoder = build_encoder(config.encoder, config.encoder_weights)
        self.decoder = load_trained_decoder(
            config, self.vocabulary, self.spec.feature_dim, self.locations
        )
        self.max_steps = config.max_words + 1  # + 1 for <end>, as the SDK decodes
        signature = [tf.TensorSpec((None, *self.spec.image.size, 3), tf.float32)]
        self.compiled_encoder = tf.function(self._encode, input_signature=signature)
        self.compiled_caption = tf.function(self._caption_graph, input_signature=signature)

    def pixels(self, paths) -> np.ndarray:
        return np.stack([preprocess(path, self.spec.image) for path in paths])  # (N, H, W, 3)

    def _encode(self, pixels):
        feature_map = self.encoder(pixels, training=False)  # (N, h, w, D)
        shape = (-1, self.locations, self.spec.feature_dim)
        return self.tf.reshape(feature_map, shape)  # (N, L, D)

    def caption_eager(self, paths) -> list[str]:
        tf = self.tf
        features = self._encode(tf.constant(self.pixels(paths)))  # (N, L, D)
        memory, keys, hidden = self.decoder.initial_state(features)
        token = tf.fill([len(paths)], self.vocabulary.start_id)  # (N,)
        words, finished = [], np.zeros(len(paths), bool)
        for _ in range(self.max_steps):
            logits, hidden, _ = self.decoder.step(token, hidden, memory, keys)  # (N, V)
            token = tf.argmax(logits, axis=-1, output_type=tf.int32)  # (N,)
            words.append(token.numpy())
            finished |= words[-1] == self.vocabulary.end_id
            if finished.all():
                break
        return self._texts(np.stack(words, axis=1))  # (N, T)

    def _caption_graph(self, pixels):
        tf = self.tf
        memory, keys, hidden = self.decoder.initial_state(self._encode(pixels))
        token = tf.fill([tf.shape(pixels)[0]], self.vocabulary.start_id)  # (N,)
        finished = tf.zeros_like(token, tf.bool)  # (N,)
        words = tf.TensorArray(tf.int32, size=0, dynamic_size=True)  # T x (N,)

        def unfinished(t, token, hidden, finished, words):
            return tf.logical_and(t < self.max_steps, tf.logical_not(tf.reduce_all(finished)))

        def step(t, token, hidden, finished, words):
            logits, hidden, _ = self.decoder.step(token, hidden, memory, keys)  # (N, V)
            token = tf.argmax(logits, axis=-1, output_type=tf.int32)  # (N,)
            finished = tf.logical_or(finished, token == self.vocabulary.end_id)
            return t + 1, token, hidden, finished, words.write(t, token)

        state = tf.while_loop(unfinished, step, (tf.constant(0), token, hidden, finished, words))
        return tf.transpose(state[-1].stack())  # (N, T)

    def caption_compiled(self, paths) -> list[str]:
        return self._texts(self.compiled_caption(self.tf.constant(self.pixels(paths))).numpy())

    def _texts(self, ids: np.ndarray) -> list[str]:
        """Token ids (N, T) to text, at most max_words words: the last step may only add
        <end>, as in the SDK's beam search."""
        return [self.vocabulary.decode(row[: self.max_steps - 1]) for row in ids]


@pytest.fixture(scope="module")
def tensorflow(settings):
    """TensorFlow with the benchmark's thread count, set before its runtime starts."""
    tf = pytest.importorskip("tensorflow", reason="the TF baselines need the export extra")
    try:
        tf.config.threading.set_intra_op_parallelism_threads(settings.threads)
        tf.config.threading.set_inter_op_parallelism_threads(settings.threads)
    except RuntimeError as error:  # TF refuses once it has run an op
        pytest.skip(f"TensorFlow started before its threads could be set: {error}")
    return tf


@pytest.fixture(scope="module")
def tf_pipelines(tensorflow):
    cache = {}

    def get(run) -> TensorFlowPipeline:
        if run.name not in cache:
            if not (run.path / "checkpoints" / "best.weights.h5").is_file():
                pytest.skip(f"{run.path} has no checkpoints/best.weights.h5 for the TF baseline")
            cache[run.name] = TensorFlowPipeline(tensorflow, run)
        return cache[run.name]

    return get


def _run_info(run) -> dict:
    return {"run": run.name, "encoder": run.config.encoder}


@pytest.mark.parametrize("pipeline", ["tf-eager", "tf-compiled"])
def test_tensorflow_caption(
    benchmark, bench_run, batch, pipeline, tf_pipelines, workload, score_bleu4, record
):
    model = tf_pipelines(bench_run)
    caption = model.caption_eager if pipeline == "tf-eager" else model.caption_compiled
    work = workload(batch)

    def run_round(chunk):
        ids, paths = chunk
        work.record(ids, caption(paths))

    benchmark.pedantic(run_round, setup=work.setup, rounds=work.rounds, warmup_rounds=1)
    record(
        benchmark,
        "caption",
        kind="caption",
        pipeline=pipeline,
        **_run_info(bench_run),
        precision="fp32",
        beam=1,
        batch=batch,
        provider="TensorFlow CPU",
        bleu4_subset=score_bleu4(work.captions),
        images_scored=len(work.captions),
        captions=work.captions,
    )


def test_sdk_caption(benchmark, bundle, beam, batch, captioners, workload, score_bleu4, record):
    captioner = captioners(bundle.path)
    work = workload(batch)

    def run_round(chunk):
        ids, paths = chunk
        if len(paths) == 1:
            texts = [captioner.caption(paths[0], beam_size=beam).text]
        else:
            texts = [r.text for r in captioner.caption_batch(list(paths), beam_size=beam)]
        work.record(ids, texts)

    benchmark.pedantic(run_round, setup=work.setup, rounds=work.rounds, warmup_rounds=1)
    record(
        benchmark,
        "caption",
        kind="caption",
        pipeline="sdk",
        **_run_info(bundle.run),
        bundle=bundle.bundle_name,
        precision=bundle.precision,
        beam=beam,
        batch=batch,
        provider=captioner.providers[0],
        bleu4_subset=score_bleu4(work.captions),
        images_scored=len(work.captions),
        captions=work.captions,
    )


@pytest.mark.parametrize("pipeline", ["tf-eager", "tf-compiled"])
def test_tensorflow_encoder(benchmark, bench_run, pipeline, tf_pipelines, images, record):
    """The encoder alone at batch 1 (the issue quotes InceptionV3: ~490 ms eager, ~70 compiled)."""
    model = tf_pipelines(bench_run)
    pixels = model.tf.constant(model.pixels(images.paths[:1]))
    encode = model._encode if pipeline == "tf-eager" else model.compiled_encoder
    benchmark.pedantic(lambda: encode(pixels).numpy(), rounds=TF_ENCODER_ROUNDS, warmup_rounds=1)
    record(
        benchmark,
        "encoder",
        kind="encoder",
        pipeline=pipeline,
        **_run_info(bench_run),
        precision="fp32",
        batch=1,
        provider="TensorFlow CPU",
    )
