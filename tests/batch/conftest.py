"""One real local Ray cluster for the batch tests, and the shared images they process.

``ray.init(num_cpus=2)`` starts the head (GCS, raylet) and every worker as processes of
their own; it is started once per session, because it takes seconds, and stopped at the end.
"""

from __future__ import annotations

import glob
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
FLICKR_IMAGES = SHARED / "flickr8k" / "images"
IMAGES = 256  # four caption_batch chunks of 64


@pytest.fixture(scope="session")
def ray_cluster():
    """The ``ray`` module, connected to a local cluster of 2 CPUs for the whole session."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def photos() -> list[str]:
    """The first IMAGES Flickr8k photos (224x224 JPEGs) by name, absolute paths."""
    if not FLICKR_IMAGES.is_dir():
        pytest.skip(f"shared data not found: {FLICKR_IMAGES} (see ../shared/data/README.md)")
    return sorted(glob.glob(str(FLICKR_IMAGES / "*.jpg")))[:IMAGES]


@pytest.fixture(scope="session")
def real_captioner():
    """The default bundle on CPU: the single-process reference."""
    from gamelab_caption import Captioner

    return Captioner(providers=["CPUExecutionProvider"])


@pytest.fixture(scope="session")
def photo_embeddings(photos, real_captioner):
    """The photos' embeddings (N, D) in one process, batch-independent (index_media.py)."""
    import numpy as np

    from gamelab_caption.index_media import encode_views
    from gamelab_caption.preprocessing import preprocess

    spec = real_captioner.bundle.image_spec
    return encode_views(real_captioner, np.stack([preprocess(path, spec) for path in photos]))
