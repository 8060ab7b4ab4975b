"""The GPU path: the same bundles on onnxruntime-gpu's CUDA provider, where one is present.

Skipped, with the reason, where ``onnxruntime.get_available_providers()`` has no
CUDAExecutionProvider. INT8 QDQ graphs run partly on the CPU there (CUDA has no kernel for
some quantised operators); ``providers`` in the JSON says what the session was given.
"""

from __future__ import annotations

import numpy as np

from gamelab_caption.preprocessing import preprocess

ENCODER_ROUNDS = 20
BEAM = 3


def test_sdk_caption_cuda(benchmark, bundle, batch, cuda, captioners, workload, record):
    captioner = captioners(bundle.path, cuda)
    work = workload(batch)

    def run_round(chunk):
        _, paths = chunk
        captioner.caption_batch(list(paths), beam_size=BEAM)

    benchmark.pedantic(run_round, setup=work.setup, rounds=work.rounds, warmup_rounds=2)
    record(
        benchmark,
        "caption cuda",
        kind="caption",
        **bundle.fields,
        beam=BEAM,
        batch=batch,
        provider=captioner.providers[0],
        providers=captioner.providers,
    )


def test_sdk_encoder_cuda(benchmark, bundle, batch, cuda, captioners, images, record):
    captioner = captioners(bundle.path, cuda)
    paths = [images.paths[i % len(images.paths)] for i in range(batch)]
    pixels = np.stack([preprocess(p, captioner.bundle.image_spec) for p in paths])
    benchmark.pedantic(lambda: captioner.encode(pixels), rounds=ENCODER_ROUNDS, warmup_rounds=3)
    record(
        benchmark,
        "encoder cuda",
        kind="encoder",
        **bundle.fields,
        batch=batch,
        provider=captioner.providers[0],
        providers=captioner.providers,
    )
