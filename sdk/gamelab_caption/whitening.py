"""Learned whitening for game search: simulated phone photos of covers, and the transform
that damps the directions in which a photo of a cover differs from the cover itself.

Learned whitening as in Radenovic et al., "Fine-tuning CNN image retrieval with no human
annotation", TPAMI 2018. The simulated photos come from this module only; the search
benchmark photographs covers with its own, separately written generator.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

WHITEN_SHRINKAGE = 0.1  # ridge added to the pair covariance, as a share of its mean eigenvalue
MAX_MARGIN = 0.3  # background around the box, per side, as a share of the cover's size
MAX_CORNER_SHIFT = 0.12  # perspective: corner displacement, as a share of the cover's size
MAX_TILT_DEGREES = 15
MAX_CUT = 0.12  # share of the photo's height or width that misses the box on one side
GLARE_CHANCE = 0.6


def perspective_coefficients(source: np.ndarray, target: np.ndarray) -> list[float]:
    """Pillow's PERSPECTIVE data mapping ``target`` corners (output) back to ``source`` (input).

    Args:
        source, target: (4, 2) corner coordinates in pixels.
    """
    rows = []
    for (x, y), (u, v) in zip(target, source, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    return np.linalg.solve(np.asarray(rows), source.reshape(8)).tolist()


def cut_side(pixels: np.ndarray, fraction: float, side: int) -> np.ndarray:
    """Drop ``fraction`` of the rows or columns of (H, W, C) ``pixels`` at one side:
    0 top, 1 bottom, 2 left, 3 right; the photo misses a strip of the box."""
    rows, columns = pixels.shape[:2]
    return [
        pixels[round(fraction * rows) :],
        pixels[: rows - round(fraction * rows)],
        pixels[:, round(fraction * columns) :],
        pixels[:, : columns - round(fraction * columns)],
    ][side]


def _background(size: tuple[int, int], rng: np.random.Generator, clutter: Image.Image | None):
    """A plain table, a striped one (wood, cloth), or another box out of focus: (H, W, 3)."""
    width, height = size
    kind = rng.integers(3)
    if kind == 2 and clutter is not None:
        blurred = (
            clutter.convert("RGB").resize(size).filter(ImageFilter.GaussianBlur(rng.uniform(1, 4)))
        )
        return np.asarray(blurred, np.float32) * rng.uniform(0.4, 1.0)
    grain = rng.standard_normal((height, width, 3), dtype=np.float32)  # float32: 3x faster
    plain = rng.uniform(0, 255, 3).astype(np.float32) + 10 * grain  # (H, W, 3)
    if kind == 1:
        y, x = np.ogrid[0:height, 0:width]  # (H, 1), (1, W)
        angle, period = rng.uniform(0, np.pi), rng.uniform(3, 25)
        phase = (x * np.cos(angle) + y * np.sin(angle)) * 2 * np.pi / period  # (H, W)
        plain = plain + rng.uniform(10, 45) * np.sin(phase)[..., None]
    return plain


def _place(cover: Image.Image, strength: float, rng: np.random.Generator, clutter):
    """The cover seen at an angle on a background: (H, W, 3) float pixels."""
    width, height = cover.size
    margin = rng.uniform(0.05, MAX_MARGIN)
    size = (round(width * (1 + 2 * margin)), round(height * (1 + 2 * margin)))
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64)
    target = corners + [margin * width, margin * height]
    target += rng.uniform(-1, 1, (4, 2)) * MAX_CORNER_SHIFT * strength * np.array([width, height])
    angle = np.deg2rad(rng.uniform(-MAX_TILT_DEGREES, MAX_TILT_DEGREES) * strength)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.array(size) / 2
    target = (target - centre) @ rotation.T + centre
    coefficients = perspective_coefficients(corners, target)
    perspective = Image.Transform.PERSPECTIVE
    warped = cover.convert("RGB").transform(
        size, perspective, coefficients, Image.Resampling.BILINEAR
    )
    mask = Image.new("L", cover.size, 255).transform(
        size, perspective, coefficients, Image.Resampling.BILINEAR
    )
    alpha = np.asarray(mask, np.float32)[..., None] / 255  # (H, W, 1)
    return alpha * np.asarray(warped, np.float32) + (1 - alpha) * _background(size, rng, clutter)


def _relight(pixels: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Exposure, contrast, white balance and, often, a specular highlight."""
    contrast = 1 + 0.2 * strength * rng.uniform(-1, 1)
    gain = 1 + 0.35 * strength * rng.uniform(-1, 1)
    pixels = ((pixels - 128) * contrast + 128) * gain
    pixels = pixels * (1 + 0.2 * strength * rng.uniform(-1, 1, 3))
    if rng.random() < GLARE_CHANCE:
        rows, columns = pixels.shape[:2]
        y, x = np.ogrid[0:rows, 0:columns]  # (H, 1), (1, W)
        cy, cx = rng.uniform(0.1, 0.9) * rows, rng.uniform(0.1, 0.9) * columns
        sigma = rng.uniform(0.08, 0.3) * max(rows, columns)
        blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2))[..., None]  # (H, W, 1)
        pixels = pixels + rng.uniform(0.3, 0.8) * strength * blob * (255 - pixels)
    return pixels


def simulate_photo(
    cover: Image.Image, rng: np.random.Generator, clutter: Image.Image | None = None
) -> Image.Image:
    """The cover as a phone photo shows it: at an angle, on a table or among other boxes
    (``clutter``), partly out of frame, relit, soft, noisy and JPEG-compressed. Each photo
    draws its strength from gentle to harsh, so the whitening sees the whole range."""
    strength = rng.uniform(0.3, 1.0)
    pixels = _place(cover, strength, rng, clutter)
    cut = rng.uniform(0, MAX_CUT) * strength
    pixels = cut_side(pixels, cut, int(rng.integers(4)))
    pixels = _relight(pixels, strength, rng)
    photo = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    photo = photo.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.8) * strength))
    grain = rng.standard_normal((photo.size[1], photo.size[0], 3), dtype=np.float32)
    noise = rng.uniform(0, 10) * strength * grain
    noisy = np.clip(np.asarray(photo, np.float32) + noise, 0, 255).astype(np.uint8)
    stream = io.BytesIO()
    Image.fromarray(noisy).save(stream, format="JPEG", quality=int(rng.uniform(35, 90)))
    return Image.open(stream).convert("RGB")


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
