"""MaskCut as pure functions (docs/method.md §3.1-§3.5): patch features + resized RGB image -> binary masks.

Three stages, each usable on its own:
  1. ``patch_masks_batch``: the N-cut loop on the patch grid (batched over images; torch device);
  2. ``pixel_masks``: nearest upsampling to the input size, earlier masks subtracted (disjoint);
  3. ``refine_masks`` + ``resize_mask``: dense CRF, hole filling, the pre/post-CRF IoU filter, and
     resizing to the original (width, height).

Stage 1 is the accelerator part; stages 2-3 (``finish_image``) are the per-image CPU part and live in
the torch-free :mod:`u2seg.maskcut.refine` (re-exported here), so that CPU worker processes can run
them while the next batch is on the device. The n_masks bipartitions of stage 1 use the pre-CRF patch
masks only (each mask's patches are removed from the graph before the next cut); the CRF of mask j
never feeds mask j + 1, which is what makes the split exact.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from u2seg.maskcut.affinity import binarized_affinity, flatten_grid, similarity_above
from u2seg.maskcut.bipartition import foreground_mask, mask_iou
from u2seg.maskcut.eigen import EigenInfo, second_eigenvectors
from u2seg.maskcut.params import MaskCutParams
from u2seg.maskcut.refine import Timer, finish_image, pixel_masks, refine_masks, resize_mask, upsample_nearest

__all__ = ["MaskCutParams", "Timer", "finish_image", "maskcut_batch", "maskcut_image", "patch_masks_batch",
           "pixel_masks", "refine_masks", "resize_mask", "upsample_nearest"]


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
