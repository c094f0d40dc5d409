"""MaskCut overlay PNGs: a deterministic image sample and mask overlays."""
from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

# Distinct overlay colours (RGB), cycled by mask index.
COLORS = np.array([
    [230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
    [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 190], [0, 128, 128],
], dtype=np.float32)


def _rank_key(image_id: int, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{int(image_id)}".encode()).hexdigest()


def gallery_ids(image_ids: Iterable[int], size: int, seed: int = 0) -> set[int]:
    """The ``size`` image ids with the smallest seeded hash: a fixed sample of the whole dataset.

    It depends only on the set of ids (not on their order or on sharding), so every shard agrees.
    """
    if size <= 0:
        return set()
    ranked = sorted({int(i) for i in image_ids}, key=lambda i: _rank_key(i, seed))
    return set(ranked[:size])


def overlay(image: np.ndarray, masks: Sequence[np.ndarray], alpha: float = 0.5) -> np.ndarray:
    """RGB uint8 image with each mask blended in its colour and outlined (mask k: colour k)."""
    out = image.astype(np.float32).copy()
    outline = np.zeros(image.shape[:2], dtype=np.int32)
    for k, m in enumerate(masks):
        color = COLORS[k % len(COLORS)]
        out[m] = (1 - alpha) * out[m] + alpha * color
        edge = m & ~ndimage.binary_erosion(m, iterations=2)
        outline[edge] = k + 1
    for k in range(len(masks)):
        out[outline == k + 1] = COLORS[k % len(COLORS)]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
