"""Where one caption's time goes: decode + preprocessing, encoder, decoder steps, beam search.

``test_caption_breakdown`` times ``Captioner.caption`` as users call it, with timers wrapped
around the pieces it is made of: ``preprocess`` (file decode, resize, normalise), the
encoder run (``Captioner._encode``), ``beam_search`` and, inside it, every decoder ``step``
call. The bookkeeping of beam search is its time minus its steps; the rest (decoder_init,
building the result) is the round minus all of those. ``test_decoder_step`` times one step alone.
"""

from __future__ import annotations

import time

import numpy as np

import gamelab_caption.captioner as captioner_module
from gamelab_caption.preprocessing import preprocess

STEP_ROUNDS = 200


class _Timers:
    """Seconds spent per piece in the current round, and all rounds' totals."""

    PIECES = ("preprocess", "encoder", "beam_search", "decoder_steps")

    def __init__(self):
        self.current = dict.fromkeys(self.PIECES, 0.0)
        self.steps = 0
        self.rounds: list[dict] = []

    def wrap(self, piece: str, function):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.current[piece] += time.perf_counter() - started
                if piece == "decoder_steps":
                    self.steps += 1

        return timed

    def start_round(self) -> None:
        self.current = dict.fromkeys(self.PIECES, 0.0)
        self.steps = 0

    def end_round(self, seconds: float) -> None:
        self.rounds.append({**self.current, "steps": self.steps, "total": seconds})

    def summary(self) -> dict:
        """Mean per piece over the timed rounds (the first, a warm-up, left out), in ms.

        Means, not medians, so that the pieces add up to the total.
        """
        rows = self.rounds[1:] or self.rounds  # one round only with --benchmark-disable
        mean = {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
        steps = mean["steps"] or 1
        return {
            "preprocess_ms": 1e3 * mean["preprocess"],
            "encoder_ms": 1e3 * mean["encoder"],
            "decoder_steps_ms": 1e3 * mean["decoder_steps"],
            "steps": mean["steps"],
            "step_ms": 1e3 * mean["decoder_steps"] / steps,
            "beam_bookkeeping_ms": 1e3 * (mean["beam_search"] - mean["decoder_steps"]),
            "init_and_rest_ms": 1e3
            * (mean["total"] - mean["preprocess"] - mean["encoder"] - mean["beam_search"]),
            "total_ms": 1e3 * mean["total"],
        }


def test_caption_breakdown(benchmark, bundle, beam, captioners, workload, record, monkeypatch):
    captioner = captioners(bundle.path)
    timers = _Timers()
    real_search = captioner_module.beam_search

    def timed_search(step, *args, **kwargs):
        return real_search(timers.wrap("decoder_steps", step), *args, **kwargs)

    monkeypatch.setattr(captioner_module, "preprocess", timers.wrap("preprocess", preprocess))
    monkeypatch.setattr(captioner_module, "beam_search", timers.wrap("beam_search", timed_search))
    monkeypatch.setattr(captioner, "_encode", timers.wrap("encoder", captioner._encode))
    work = workload(1)

    def run_round(chunk):
        _, paths = chunk
        timers.start_round()
        started = time.perf_counter()
        captioner.caption(paths[0], beam_size=beam)
        timers.end_round(time.perf_counter() - started)

    benchmark.pedantic(run_round, setup=work.setup, rounds=work.rounds, warmup_rounds=1)
    # every piece ran in every round: a wrapper the caption no longer calls would read 0 ms
    assert all(row[piece] > 0 for row in timers.rounds for piece in _Timers.PIECES)
    record(
        benchmark,
        "breakdown",
        kind="breakdown",
        **bundle.fields,
        beam=beam,
        batch=1,
        **{key: round(value, 3) for key, value in timers.summary().items()},
    )


def test_decoder_step(benchmark, bundle, beam, captioners, images, record):
    """One decoder step for one image's beams (beam rows), on real features of a real image."""
    captioner = captioners(bundle.path)
    pixels = preprocess(images.paths[0], captioner.bundle.image_spec)[None]  # (1, H, W, 3)
    features, _ = captioner.encode(pixels)  # (1, L, D)
    sessions = captioner._sessions  # the graphs themselves: no public API runs one step
    memory, keys, hidden = sessions["decoder_init"].run(None, {"features": features})
    feeds = {
        "token": np.full(beam, captioner.bundle.vocabulary.start_id, np.int64),  # (K,)
        "hidden": np.repeat(hidden, beam, axis=0),  # (K, U)
        "memory": np.repeat(memory, beam, axis=0),  # (K, L, E)
        "keys": np.repeat(keys, beam, axis=0),  # (K, L, A)
    }
    step = sessions["decoder_step"]
    benchmark.pedantic(lambda: step.run(None, feeds), rounds=STEP_ROUNDS, warmup_rounds=5)
    record(
        benchmark,
        "decoder step",
        kind="decoder_step",
        **bundle.fields,
        beam=beam,
        rows=beam,
    )
