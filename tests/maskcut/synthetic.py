"""Synthetic patch features with known objects (shared by the MaskCut tests and nothing else)."""
from __future__ import annotations

import numpy as np


def blob_features(h: int, w: int, boxes: list[tuple[int, int, int, int]], dim: int = 32, noise: float = 0.35,
                  seed: int = 0) -> np.ndarray:
    """(dim, h, w) float32 features: a background vector, one vector per box (y0, x0, y1, x1), plus noise."""
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(len(boxes) + 1, dim))
    labels = np.zeros((h, w), dtype=int)
    for k, (y0, x0, y1, x1) in enumerate(boxes, start=1):
        labels[y0:y1, x0:x1] = k
    feats = protos[labels] + noise * rng.normal(size=(h, w, dim))
    return np.ascontiguousarray(feats.transpose(2, 0, 1)).astype(np.float32)


def box_mask(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """(h, w) bool mask of a (y0, x0, y1, x1) box."""
    m = np.zeros((h, w), dtype=bool)
    m[box[0]:box[2], box[1]:box[3]] = True
    return m
