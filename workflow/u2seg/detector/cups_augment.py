"""CUPS's self-training augmentations of a pseudo-labelled sample (``cups/augmentation.py``), on host numpy
samples: photometric (Gaussian blur, colour jitter, grayscale), random crop and resolution jitter.

Same operations and ranges as CUPS's kornia pipeline, drawn from a seeded numpy generator (so a resumed
run draws the same values); not bit-equal to kornia's (docs/selftrain.md).
"""
from __future__ import annotations

import cv2
import numpy as np

from u2seg.detector.data import Sample, drop_empty, output_size, resize_sample

MIN_MASK_PIXELS = 5  # CUPS's crop drops masks of 4 pixels or fewer


def gaussian_blur(image: np.ndarray, rng: np.random.Generator, kernel: int = 7,
                  sigma: tuple[float, float] = (0.1, 2.0)) -> np.ndarray:
    """7 x 7 Gaussian blur with sigma ~ U(0.1, 2.0) (kornia RandomGaussianBlur, p = 1)."""
    s = float(rng.uniform(*sigma))
    return cv2.GaussianBlur(image, (kernel, kernel), sigmaX=s, sigmaY=s, borderType=cv2.BORDER_REFLECT_101)


def _gray(x: np.ndarray) -> np.ndarray:
    return (0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2])[..., None]


def color_jitter(image: np.ndarray, rng: np.random.Generator, brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.4, hue: float = 0.1) -> np.ndarray:
    """Brightness, contrast, saturation factors ~ U(1 - v, 1 + v) and a hue shift ~ U(-hue, hue) turns,
    in that order, on a float 0..1 image."""
    x = image.astype(np.float32) / 255.0
    x = np.clip(x * rng.uniform(1 - brightness, 1 + brightness), 0, 1)
    x = np.clip((x - _gray(x).mean()) * rng.uniform(1 - contrast, 1 + contrast) + _gray(x).mean(), 0, 1)
    g = _gray(x)
    x = np.clip((x - g) * rng.uniform(1 - saturation, 1 + saturation) + g, 0, 1)
    shift = float(rng.uniform(-hue, hue))
    hsv = cv2.cvtColor(x.astype(np.float32), cv2.COLOR_RGB2HSV)  # hue in degrees 0..360
    hsv[..., 0] = np.mod(hsv[..., 0] + shift * 360.0, 360.0)
    x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def photometric(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """CUPS's PhotometricAugmentations: blur (p 1), colour jitter (p 0.5), grayscale (p 0.2)."""
    image = gaussian_blur(image, rng)
    if rng.random() < 0.5:
        image = color_jitter(image, rng)
    if rng.random() < 0.2:
        g = np.clip(np.rint(_gray(image.astype(np.float32))), 0, 255).astype(np.uint8)
        image = np.repeat(g, 3, axis=2)
    return np.ascontiguousarray(image)


def random_crop(sample: Sample, rng: np.random.Generator, min_fraction: float) -> Sample:
    """Crop f x each side (f ~ U(min_fraction, 1)) at a random place; masks under 5 pixels are dropped."""
    h, w = sample.image.shape[:2]
    f = float(rng.uniform(min_fraction, 1.0))
    ch, cw = max(1, int(round(h * f))), max(1, int(round(w * f)))
    y0 = int(rng.integers(0, h - ch + 1))
    x0 = int(rng.integers(0, w - cw + 1))
    ys, xs = slice(y0, y0 + ch), slice(x0, x0 + cw)
    masks = sample.masks[:, ys, xs]
    keep = masks.sum(axis=(1, 2)) >= MIN_MASK_PIXELS
    return drop_empty(Sample(np.ascontiguousarray(sample.image[ys, xs]), np.ascontiguousarray(masks[keep]),
                             sample.labels[keep], np.ascontiguousarray(sample.semantic[ys, xs]), sample.image_id))


def resolution_jitter(sample: Sample, rng: np.random.Generator, min_sizes: list[int], max_size: int) -> Sample:
    """Resize to a short side drawn from ``min_sizes`` (long side capped at ``max_size``)."""
    short = int(min_sizes[int(rng.integers(len(min_sizes)))])
    return resize_sample(sample, output_size(*sample.image.shape[:2], short, max_size))
