"""MaskCut's per-image CPU part (docs/method.md §3.5), torch-free: patch masks -> final pixel masks.

``pixel_masks`` (nearest upsampling, earlier masks subtracted), ``refine_masks`` (dense CRF, hole
filling, the pre/post-CRF IoU filter) and ``resize_mask`` (to the original size); ``finish_image`` chains
them. Kept free of torch so that CPU worker processes (:mod:`u2seg.overlap`) start fast.
"""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from u2seg.crf import ImageCRF
from u2seg.maskcut.bipartition import mask_iou
from u2seg.maskcut.params import MaskCutParams


class Timer:
    """Accumulates wall-clock seconds per named step."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, name: str, seconds: float, count: int = 1) -> None:
        self.seconds[name] += seconds
        self.counts[name] += count

    def time(self, name: str) -> "_Span":
        return _Span(self, name)


class _Span:
    def __init__(self, timer: Timer, name: str):
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timer.add(self.name, time.perf_counter() - self.t0)


def upsample_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour upsampling of an (h, w) grid to (height, width) (patch -> pixel block)."""
    h, w = mask.shape
    rows = (np.arange(height) * h) // height
    cols = (np.arange(width) * w) // width
    return mask[rows[:, None], cols[None, :]]


def pixel_masks(patch_masks: Sequence[np.ndarray], size: int) -> list[np.ndarray]:
    """Upsample patch masks to size x size and subtract the union of every earlier mask (disjoint)."""
    covered = np.zeros((size, size), dtype=bool)
    out = []
    for pm in patch_masks:
        m = upsample_nearest(pm, size, size) & ~covered
        covered |= m
        out.append(m)
    return out


def refine_masks(image: np.ndarray | None, masks: Sequence[np.ndarray], params: MaskCutParams,
                 timer: Timer | None = None) -> list[np.ndarray]:
    """Dense CRF, hole filling and the pre/post-CRF IoU filter (method §3.5) on input-size masks.

    Empty masks stay empty (a CRF cannot create foreground from an all-background unary); masks whose
    CRF result has IoU < ``min_crf_iou`` with the input become empty. ``image`` may be None only
    when the CRF is disabled.
    """
    timer = timer or Timer()
    crf: ImageCRF | None = None
    out = []
    for m in masks:
        if not m.any():
            out.append(np.zeros_like(m, dtype=bool))
            continue
        if params.crf.enabled:
            if image is None:
                raise ValueError("the dense CRF needs the resized RGB image")
            with timer.time("crf"):
                if crf is None:
                    crf = ImageCRF(image, params.crf)
                refined = crf.refine(m)
        else:
            refined = m
        refined = ndimage.binary_fill_holes(refined)
        if mask_iou(m, refined) < params.min_crf_iou:
            refined = np.zeros_like(refined)
        out.append(refined)
    return out


def resize_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize a binary mask to the original (width, height) (method §3.5: 0/255 uint8, PIL bicubic, PIL's
    default filter for 8-bit images, re-binarised at max / 2)."""
    if mask.shape == (height, width):
        return mask.astype(bool)
    img = Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.Resampling.BICUBIC)
    arr = np.asarray(img)
    top = int(arr.max())
    if top == 0:
        return np.zeros((height, width), dtype=bool)
    return arr > top / 2


def finish_image(patch: Sequence[np.ndarray], image: np.ndarray | None, size: int, width: int, height: int,
                 params: MaskCutParams, timer: Timer | None = None) -> list[np.ndarray]:
    """Patch masks of one image -> its final (height, width) masks (empty ones dropped)."""
    timer = timer or Timer()
    refined = refine_masks(image, pixel_masks(patch, size), params, timer)
    with timer.time("resize"):
        final = [resize_mask(m, width, height) for m in refined]
    return [m for m in final if m.any()]
