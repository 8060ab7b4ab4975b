"""What an index holds for one catalogue image, computed the same in one process or on many.

``GameIndex`` (search.py) embeds every catalogue image, ``IMAGE_PHOTOS`` simulated phone
photos of it (whitening.py) and, for title screens and the like, the text read in it. The
batch job (batch.py) computes the same on a Ray cluster, so that ``index build --embeddings``
assembles an index identical to ``index build`` alone. So nothing here may depend on which
images are processed together, or where:

- an image's photos draw from their own random generator, seeded with PHOTO_SEED and a hash
  of the image file's bytes, not from one generator running along the catalogue;
- the blurred box behind the cover in some photos (``clutter``) is the catalogue's previous
  image, or none when that one cannot be opened;
- ONNX Runtime gives an image the same embedding in any encoder call of 2 or more images,
  but rounds a call of one image differently (4e-8 apart), so a lone image at the end of
  ``Captioner.encode``'s chunks is encoded beside a copy of itself (``encode_views``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from .captioner import ENCODER_BATCH, Captioner
from .preprocessing import ImageSpec, to_pixels
from .whitening import simulate_photo

IMAGE_PHOTOS = 3  # simulated photos of every image: they teach the whitening, join its vector
PHOTO_SEED = 0  # the simulated photos: same image file, same photos
READ_KINDS = ("title_screen", "logo", "physical")  # media whose text is read at build


def photo_generator(path: str) -> np.random.Generator:
    """The random generator of an image's simulated photos: PHOTO_SEED and its file's bytes."""
    digest = hashlib.sha256(Path(path).read_bytes()).digest()
    return np.random.default_rng([PHOTO_SEED, int.from_bytes(digest[:8], "little")])


def view_pixels(
    image: Image.Image, spec: ImageSpec, path: str, clutter: Image.Image | None, photos: int
) -> np.ndarray:
    """The image, then ``photos`` simulated photos of it, as encoder input (1 + photos, H, W, 3).

    Args:
        image: the catalogue image, opened from ``path``.
        spec: the encoder's image spec.
        path: the image file; its bytes seed the photos.
        clutter: the catalogue's previous image, or None.
        photos: how many photos, 0 for none.
    """
    views = [to_pixels(image, spec)]
    if photos:
        rng = photo_generator(path)
        views += [to_pixels(simulate_photo(image, rng, clutter), spec) for _ in range(photos)]
    return np.stack(views)  # (1 + photos, H, W, 3)


def encode_views(captioner: Captioner, pixels: np.ndarray) -> np.ndarray:
    """Encoder embeddings (N, D), L2-normalised, that do not depend on the batch (see above)."""
    lone = len(pixels) % ENCODER_BATCH == 1
    if lone:
        pixels = np.concatenate([pixels, pixels[-1:]])  # (N + 1, H, W, 3)
    _, embedding = captioner.encode(pixels)  # (N [+ 1], D)
    return embedding[: len(embedding) - lone]  # (N, D)


def text_of(lines) -> str:
    """The text lines OCR read in an image (ocr.TextLine), as one string."""
    return " ".join(line.text for line in lines)
