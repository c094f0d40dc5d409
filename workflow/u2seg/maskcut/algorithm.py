"""MaskCut as pure functions (docs/method.md §3.1-§3.5): patch features + resized RGB image -> binary masks.

Three stages, each usable on its own:
  1. ``patch_masks_batch``: the N-cut loop on the patch grid (batched over images; torch device);
  2. ``pixel_masks``: nearest upsampling to the input size, earlier masks subtracted (disjoint);
  3. ``refine_masks`` + ``resize_mask``: dense CRF, hole filling, the pre/post-CRF IoU filter, and
     resizing to the original (width, height).
"""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from u2seg.crf import ImageCRF
from u2seg.maskcut.affinity import binarized_affinity, flatten_grid, similarity_above
from u2seg.maskcut.bipartition import foreground_mask, mask_iou
from u2seg.maskcut.eigen import EigenInfo, second_eigenvectors
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def patch_masks_batch(features: np.ndarray | torch.Tensor, params: MaskCutParams,
                      device: torch.device | str = "cpu", timer: Timer | None = None,
                      eigen_log: list[EigenInfo] | None = None) -> list[list[np.ndarray]]:
    """The N-cut loop (method §3.2-§3.4) for a batch of (B, C, h, w) feature grids.

    Returns, per image, ``n_masks`` (h, w) bool patch masks (rejected ones are all-False). The
    thresholded similarity is computed once per image: zeroing a painted patch's features only
    zeroes its row and column of S, which ``binarized_affinity`` applies.
    """
    timer = timer or Timer()
    device = torch.device(device)
    feats = torch.as_tensor(np.asarray(features)) if not isinstance(features, torch.Tensor) else features
    if feats.ndim != 4:
        raise ValueError(f"features must be (B, C, h, w), got shape {tuple(feats.shape)}")
    bsz, _, h, w = feats.shape
    n = h * w
    with timer.time("affinity"):
        above = similarity_above(flatten_grid(feats, device), params.tau)
        _sync(device)
    painted = torch.zeros(bsz, n, dtype=torch.bool, device=device)
    previous = [np.zeros((h, w), dtype=bool) for _ in range(bsz)]
    out: list[list[np.ndarray]] = [[] for _ in range(bsz)]
    for i in range(params.n_masks):
        with timer.time("affinity"):
            adj = binarized_affinity(above, params.tau, params.eps, painted)
            _sync(device)
        with timer.time("eigen"):
            x, info = second_eigenvectors(adj, params.solver, tol=params.eigen_tol, seed=params.seed)
            x = x.cpu().numpy().reshape(bsz, h, w)
        del adj
        if eigen_log is not None:
            eigen_log.append(info)
        with timer.time("bipartition"):
            for b in range(bsz):
                mask = foreground_mask(x[b], params.foreground_rule)
                if i >= 1 and (mask_iou(mask, previous[b]) > params.max_iou_previous
                               or mask.sum() / n <= params.min_area_fraction):
                    mask = np.zeros((h, w), dtype=bool)
                out[b].append(mask)
                previous[b] = mask
            painted |= torch.from_numpy(np.stack([m[-1].ravel() for m in out])).to(device)
    timer.counts["images"] += bsz
    return out


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


def maskcut_batch(features: np.ndarray | torch.Tensor, images: Sequence[np.ndarray | None],
                  orig_sizes: Sequence[tuple[int, int]], params: MaskCutParams, input_size: int | None = None,
                  device: torch.device | str = "cpu", timer: Timer | None = None,
                  eigen_log: list[EigenInfo] | None = None) -> list[list[np.ndarray]]:
    """MaskCut for a batch: features (B, C, h, w), the input_size x input_size RGB images (None when
    the CRF is off), original (height, width) sizes. Returns per image its accepted (height, width)
    bool masks (possibly none)."""
    timer = timer or Timer()
    if not (len(features) == len(images) == len(orig_sizes)):
        raise ValueError("features, images and orig_sizes must have the same length")
    patch = patch_masks_batch(features, params, device, timer, eigen_log)
    out = []
    for pm, img, (height, width) in zip(patch, images, orig_sizes):
        size = input_size if input_size is not None else (None if img is None else int(img.shape[0]))
        if size is None:
            raise ValueError("give input_size when no image is passed")
        if img is not None and img.shape[:2] != (size, size):
            raise ValueError(f"MaskCut expects the {size}x{size} input image, got {img.shape}")
        out.append(finish_image(pm, img, size, int(width), int(height), params, timer))
    return out


def maskcut_image(features: np.ndarray | torch.Tensor, image: np.ndarray | None, orig_size: tuple[int, int],
                  params: MaskCutParams = MaskCutParams(), input_size: int | None = None,
                  device: torch.device | str = "cpu") -> list[np.ndarray]:
    """MaskCut of one image: features (C, h, w), the input-size RGB image, original (height, width)."""
    feats = features if isinstance(features, torch.Tensor) else torch.as_tensor(np.asarray(features))
    return maskcut_batch(feats.unsqueeze(0), [image], [orig_size], params, input_size, device)[0]
