"""Bahdanau-attention GRU decoder (Show, Attend and Tell with a GRU), in Keras.

Unlike the TensorFlow tutorial this carries the GRU state from step to step (the tutorial
resets it every step) and starts it from the mean image feature. With ``class_count`` it also
reads the encoder's frozen ImageNet head on that mean (``build_decoder`` sets its weights): the
1,000 probabilities join the initial state and are one more slot the attention can pick, after
the image's L locations (``class_input``; measured and not shipped, see the model card).
The three methods
``initial_state``, ``step`` and ``call`` are exactly what the ONNX graphs of a bundle run:
``decoder_init`` = initial_state, ``decoder_step`` = step.

Shapes: N batch, L image locations, D encoder channels, E embedding_dim, A attention_dim,
U units, V vocabulary size, T caption length.
"""

from __future__ import annotations

import keras
import tensorflow as tf


class CaptionDecoder(keras.Model):
    """Args:
    vocab_size: V, including the special tokens (pad id 0).
    embedding_dim: E, width of word embeddings and of projected image features.
    units: U, GRU state width.
    attention_dim: A, Bahdanau attention width.
    dropout: dropout rate before the output layers.
    class_count: size of the encoder's ImageNet head the decoder reads; 0: none.
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int = 256,
        units: int = 512,
        attention_dim: int = 512,
        dropout: float = 0.3,
        class_count: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.project = keras.layers.Dense(embedding_dim, activation="relu", name="project")
        self.class_count = class_count
        # With classes, tanh comes after their share of the state is added.
        self.init_hidden = keras.layers.Dense(
            units, activation=None if class_count else "tanh", name="init_hidden"
        )
        if class_count:
            self.imagenet_head = keras.layers.Dense(
                class_count, activation="softmax", trainable=False, name="imagenet_head"
            )
            self.class_state = keras.layers.Dense(units, use_bias=False, name="class_state")
            self.class_memory = keras.layers.Dense(
                embedding_dim, activation="relu", name="class_memory"
            )
        self.attention_keys = keras.layers.Dense(attention_dim, name="attention_keys")
        self.attention_query = keras.layers.Dense(attention_dim, name="attention_query")
        self.attention_score = keras.layers.Dense(1, name="attention_score")
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding")
        self.gru = keras.layers.GRUCell(units, name="gru")
        self.dropout = keras.layers.Dropout(dropout)
        self.deep_output = keras.layers.Dense(embedding_dim, activation="tanh", name="deep_output")
        self.logits = keras.layers.Dense(vocab_size, name="logits")

    @property
    def memory_width(self) -> int:
        return self.project.units

    @property
    def key_width(self) -> int:
        return self.attention_keys.units

    @property
    def state_width(self) -> int:
        return self.gru.units

    @property
    def extra_slots(self) -> int:
        """Memory rows after the image's L locations: 1 for the classes, else 0."""
        return 1 if self.class_count else 0

    def initial_state(self, features):
        """features (N, L, D) -> memory (N, M, E), keys (N, M, A), hidden (N, U); M = L +
        extra_slots."""
        memory = self.project(features)  # (N, L, E)
        pooled = tf.reduce_mean(features, axis=1)  # (N, D)
        hidden = self.init_hidden(pooled)  # (N, U)
        if self.class_count:
            classes = self.imagenet_head(pooled)  # (N, C)
            memory = tf.concat([memory, self.class_memory(classes)[:, None]], axis=1)
            hidden = tf.tanh(hidden + self.class_state(classes))
        keys = self.attention_keys(memory)  # (N, M, A): fixed per image, computed once
        return memory, keys, hidden

    def step(self, token, hidden, memory, keys, training=False):
        """One word: token (N,), hidden (N, U) -> logits (N, V), hidden (N, U), attention (N, M)."""
        query = self.attention_query(hidden)[:, None, :]  # (N, 1, A)
        scores = self.attention_score(tf.tanh(keys + query))[:, :, 0]  # (N, M)
        attention = tf.nn.softmax(scores, axis=-1)  # (N, M)
        context = tf.reduce_sum(attention[:, :, None] * memory, axis=1)  # (N, E)
        embedded = self.embedding(token)  # (N, E)
        gru_input = tf.concat([embedded, context], axis=-1)  # (N, 2E)
        output, new_hidden = self.gru(gru_input, [hidden], training=training)
        new_hidden = new_hidden[0] if isinstance(new_hidden, (list, tuple)) else new_hidden
        deep = self.deep_output(
            tf.concat([self.dropout(output, training=training), context], axis=-1)
        )  # (N, E)
        logits = self.logits(self.dropout(deep, training=training))  # (N, V)
        return logits, new_hidden, attention

    def call(self, inputs, training=False):
        """Teacher forcing. inputs = (features (N, L, D), tokens (N, T)) -> logits (N, T, V),
        attention (N, T, L): token t predicts token t + 1."""
        features, tokens = inputs
        memory, keys, hidden = self.initial_state(features)
        all_logits, all_attention = [], []
        for t in range(tokens.shape[1]):  # static unroll: T is fixed per run
            logits, hidden, attention = self.step(tokens[:, t], hidden, memory, keys, training)
            all_logits.append(logits)
            all_attention.append(attention)
        return tf.stack(all_logits, axis=1), tf.stack(all_attention, axis=1)


class DecoderEnsemble:
    """Several trained decoders run as one, with the same ``initial_state`` and ``step``.

    Their memories, keys and GRU states sit side by side on the last axis, so the exported
    graphs keep the bundle's three-graph contract and the SDK runs an ensemble unchanged. The
    step's scores are the mean of the members' log-probabilities (a product of experts, not
    normalised: exp sums to <= 1), its attention the members' mean. Like a single decoder's
    logits, they are renormalised by the log_softmax of the exported step graph
    (``convert.decoder_functions``); the SDK's beam search uses that output as it is.
    """

    def __init__(self, members: list[CaptionDecoder]):
        if len({m.vocab_size for m in members}) != 1:
            raise ValueError("Ensemble members must share one vocabulary")
        if len({m.extra_slots for m in members}) != 1:
            raise ValueError("Ensemble members must all read the classes, or none")
        self.members = members
        self.vocab_size = members[0].vocab_size

    @property
    def memory_width(self) -> int:
        return sum(m.memory_width for m in self.members)

    @property
    def key_width(self) -> int:
        return sum(m.key_width for m in self.members)

    @property
    def state_width(self) -> int:
        return sum(m.state_width for m in self.members)

    @property
    def extra_slots(self) -> int:
        return self.members[0].extra_slots

    def initial_state(self, features):
        states = [m.initial_state(features) for m in self.members]
        return tuple(tf.concat(parts, axis=-1) for parts in zip(*states, strict=True))

    def step(self, token, hidden, memory, keys, training=False):
        hiddens = tf.split(hidden, [m.state_width for m in self.members], axis=-1)
        memories = tf.split(memory, [m.memory_width for m in self.members], axis=-1)
        all_keys = tf.split(keys, [m.key_width for m in self.members], axis=-1)
        log_probs, next_hiddens, attentions = [], [], []
        for member, *state in zip(self.members, hiddens, memories, all_keys, strict=True):
            logits, next_hidden, attention = member.step(token, *state, training=training)
            log_probs.append(tf.nn.log_softmax(logits))
            next_hiddens.append(next_hidden)
            attentions.append(attention)
        return (
            tf.add_n(log_probs) / len(log_probs),
            tf.concat(next_hiddens, axis=-1),
            tf.add_n(attentions) / len(attentions),
        )


def build_decoder(config, vocab_size: int, feature_dim: int, locations: int) -> CaptionDecoder:
    """A decoder with its weights created (called once on zeros) and, with the config's
    ``class_input`` (which TrainConfig allows only for an encoder with a head), its encoder's
    ImageNet head in place."""
    head = None
    if config.class_input:
        from .class_head import imagenet_head

        head = imagenet_head(config.encoder, config.encoder_weights)
    decoder = CaptionDecoder(
        vocab_size,
        config.embedding_dim,
        config.units,
        config.attention_dim,
        config.dropout,
        class_count=0 if head is None else len(head[1]),
    )
    decoder((tf.zeros((1, locations, feature_dim)), tf.zeros((1, 2), tf.int64)))
    if head is not None:
        decoder.imagenet_head.set_weights(list(head))
    return decoder
