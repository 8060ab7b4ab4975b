"""Learned whitening for game search: simulated photos of covers, and the transform that
damps the directions in which a photo of a cover differs from the cover itself.

Learned whitening as in Radenovic et al., "Fine-tuning CNN image retrieval with no human
annotation", TPAMI 2018.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

WHITEN_SHRINKAGE = 0.1  # ridge added to the pair covariance, as a share of its mean eigenvalue


def simulate_photo(cover: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The cover as a casual photo shows it: tilted on a plain background, relit, soft."""
    width, height = cover.size
    margin = rng.uniform(0.05, 0.3)  # background around the box, per side
    size = (round(width * (1 + 2 * margin)), round(height * (1 + 2 * margin)))
    background = rng.uniform(0, 255, 3) + rng.normal(0, 12, (size[1], size[0], 3))  # (H, W, 3)
    photo = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    tilted = cover.convert("RGBA").rotate(
        rng.uniform(-10, 10), Image.Resampling.BILINEAR, expand=True
    )
    shift = rng.uniform(-0.5, 0.5, 2) * margin * np.array([width, height])
    corner = (np.array(size) - tilted.size) / 2 + shift
    photo.paste(tilted, tuple(int(v) for v in corner.round()), tilted)
    pixels = np.asarray(photo, dtype=np.float32)  # (H, W, 3)
    pixels = (pixels - 128) * rng.uniform(0.8, 1.2) + 128 * rng.uniform(0.8, 1.2)
    pixels = pixels * rng.uniform(0.9, 1.1, 3)  # white balance
    photo = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return photo.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.5)))


def learn_whitening(vectors: np.ndarray, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and matrix (D, D) that whiten the covariance of pair differences.

    Args:
        vectors: (N, D) normalised cover embeddings; their mean is subtracted.
        pairs: (P, 2, D) normalised (cover, view of the same cover) embeddings.
    """
    differences = (pairs[:, 0] - pairs[:, 1]).astype(np.float64)  # (P, D)
    covariance = differences.T @ differences / len(differences)  # (D, D)
    ridge = max(WHITEN_SHRINKAGE * np.trace(covariance) / len(covariance), 1e-12)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance + ridge * np.eye(len(covariance)))
    matrix = eigenvectors @ np.diag(eigenvalues**-0.5) @ eigenvectors.T  # C^(-1/2), (D, D)
    return vectors.mean(axis=0).astype(np.float32), matrix.astype(np.float32)
