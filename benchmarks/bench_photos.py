"""Simulated phone photos of a catalogue image, at graded strengths, for the search benchmarks.

Written apart from the index's own simulator (whitening.py) on purpose, so that a benchmark
does not grade the index on the very photos it learned from; it renders the same kinds of
effects, though, so real photos may score lower.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

from gamelab_caption.whitening import cut_side, perspective_coefficients

# Strength of each photo effect per level: fractions of the cover size, degrees, relative
# gains, Gaussian radius and sigma in pixels, JPEG quality, glare opacity.
LEVELS = {
    "mild": dict(corner=0.03, rotate=3, margin=0.08, cut=0.00, light=0.10, white_balance=0.05,
                 blur=0.4, noise=2.0, jpeg=85, glare=0.0),
    "medium": dict(corner=0.07, rotate=8, margin=0.15, cut=0.05, light=0.20, white_balance=0.10,
                   blur=0.8, noise=5.0, jpeg=65, glare=0.35),
    "strong": dict(corner=0.12, rotate=15, margin=0.25, cut=0.10, light=0.30, white_balance=0.18,
                   blur=1.4, noise=9.0, jpeg=45, glare=0.6),
}  # fmt: skip


def _background(size: tuple[int, int], rng: np.random.Generator, clutter: Image.Image):
    """A plain table with a light gradient, a striped one, or another box out of focus."""
    width, height = size
    kind = rng.integers(3)
    if kind == 2:
        other = clutter.resize(size).filter(ImageFilter.GaussianBlur(rng.uniform(1, 3)))
        return np.asarray(other, dtype=np.float64) * rng.uniform(0.5, 1.0)  # (H, W, 3)
    base = rng.uniform(30, 220, 3)  # (3,)
    ramp = np.linspace(-1, 1, width)[None, :, None] * rng.uniform(-40, 40, 3)  # (1, W, 3)
    texture = rng.normal(0, 6, (height, width, 1))  # (H, W, 1)
    if kind == 1:  # wood grain or fabric: wavy stripes at a random angle and period
        y, x = np.mgrid[0:height, 0:width]
        angle, period = rng.uniform(0, np.pi), rng.uniform(4, 20)
        phase = (x * np.cos(angle) + y * np.sin(angle)) * 2 * np.pi / period
        texture = texture + rng.uniform(15, 40) * np.sin(phase + 2 * np.sin(y / 17))[..., None]
    return np.clip(base + ramp + texture, 0, 255)  # (H, W, 3)


def photograph(cover: Image.Image, level: str, rng: np.random.Generator, clutter: Image.Image):
    """A phone photo of ``cover`` at a named strength, as JPEG bytes."""
    p = LEVELS[level]
    width, height = cover.size
    margin = p["margin"] * rng.uniform(0.5, 1.0)
    canvas = (round(width * (1 + 2 * margin)), round(height * (1 + 2 * margin)))
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)
    target = corners + [margin * width, margin * height]
    target += rng.uniform(-1, 1, (4, 2)) * p["corner"] * [width, height]
    angle = np.deg2rad(rng.uniform(-p["rotate"], p["rotate"]))
    centre = np.array(canvas) / 2
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    target = (target - centre) @ rotation.T + centre
    coefficients = perspective_coefficients(corners, target)
    perspective = Image.Transform.PERSPECTIVE
    warped = cover.transform(canvas, perspective, coefficients, Image.Resampling.BICUBIC)
    mask = Image.new("L", cover.size, 255).transform(
        canvas, perspective, coefficients, Image.Resampling.BILINEAR
    )
    alpha = np.asarray(mask, dtype=np.float64)[..., None] / 255  # (H, W, 1)
    pixels = alpha * np.asarray(warped) + (1 - alpha) * _background(canvas, rng, clutter)

    cut = p["cut"] * rng.uniform(0, 1)  # the photo misses a strip of the box on one side
    pixels = cut_side(pixels, cut, int(rng.integers(4)))

    gain = 1 + p["light"] * rng.uniform(-1, 1)
    contrast = 1 + p["light"] / 2 * rng.uniform(-1, 1)
    white_balance = 1 + p["white_balance"] * rng.uniform(-1, 1, 3)  # (3,)
    pixels = ((pixels - 128) * contrast + 128) * gain * white_balance
    if p["glare"] > 0:  # a specular highlight: blend towards white inside a soft blob
        rows, columns = pixels.shape[:2]
        y, x = np.mgrid[0:rows, 0:columns]
        cy, cx = rng.uniform(0.2, 0.8) * rows, rng.uniform(0.2, 0.8) * columns
        sigma = rng.uniform(0.1, 0.25) * max(rows, columns)
        blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2))[..., None]  # (H, W, 1)
        pixels = pixels + p["glare"] * rng.uniform(0.6, 1.0) * blob * (255 - pixels)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    image = image.filter(ImageFilter.GaussianBlur(p["blur"] * rng.uniform(0.5, 1.0)))
    noisy = np.asarray(image, dtype=np.float64) + rng.normal(0, p["noise"], (*image.size[::-1], 3))
    stream = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(
        stream, format="JPEG", quality=p["jpeg"]
    )
    return stream.getvalue()
