"""Per-instance embeddings for instance clustering (docs/method.md §2.2, §4).

* ``pooled``: mask-weighted average of the dense shard features. The dense grid covers the whole
  image (square resize, aspect not kept), so each grid cell's weight is the exact fraction of it
  covered by the mask at the original resolution. No second forward pass.
* ``crop_cls``: the recipe of method §2.2: crop the image to the mask's box (plus a margin, a fraction of
  the box size per side), set pixels outside the mask to a constant background colour, resize the
  shorter side to ``crop_size`` (bilinear, antialiased) and centre-crop ``crop_size`` x ``crop_size``,
  normalise with the backbone's mean/std, and take the backbone's global embedding (ViT: CLS token
  after the final norm). Embeddings are not L2-normalised (method §2.2).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from u2seg.coco_format import mask_bbox


def overlap_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) overlap length of output cell i with input pixel j, in output-cell units."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    lo = np.maximum(edges[:-1, None], np.arange(n_in)[None, :])
    hi = np.minimum(edges[1:, None], np.arange(n_in)[None, :] + 1)
    return np.clip(hi - lo, 0.0, None) / (n_in / n_out)


def mask_weights(mask: np.ndarray, grid_h: int, grid_w: int) -> np.ndarray:
    """Fraction (grid_h, grid_w) of every grid cell covered by a (H, W) mask."""
    rows = overlap_matrix(grid_h, mask.shape[0])
    cols = overlap_matrix(grid_w, mask.shape[1])
    return (rows @ mask.astype(np.float64) @ cols.T).astype(np.float32)


def pooled_embeddings(dense: np.ndarray, masks: Sequence[np.ndarray]) -> np.ndarray:
    """Mask-weighted means (n, C) float32 of a dense map (C, h, w) under (H, W) masks (non-empty)."""
    c, h, w = dense.shape
    flat = dense.reshape(c, h * w).astype(np.float32)
    out = np.empty((len(masks), c), dtype=np.float32)
    for i, mask in enumerate(masks):
        weights = mask_weights(mask, h, w).ravel()
        total = float(weights.sum())
        if total <= 0:
            raise ValueError(f"mask {i} is empty")
        out[i] = flat @ weights / total
    return out


def crop_instance(image: np.ndarray, mask: np.ndarray, background: Sequence[int], margin: float) -> np.ndarray:
    """Crop (h, w, 3) uint8 of the mask's box (+ margin per side), background outside the mask."""
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} sizes differ")
    x, y, w, h = mask_bbox(mask)
    if w == 0 or h == 0:
        raise ValueError("empty mask")
    height, width = mask.shape
    x0 = max(0, math.floor(x - margin * w))
    y0 = max(0, math.floor(y - margin * h))
    x1 = min(width, math.ceil(x + w + margin * w))
    y1 = min(height, math.ceil(y + h + margin * h))
    crop = image[y0:y1, x0:x1].copy()
    crop[~mask[y0:y1, x0:x1]] = np.asarray(background, dtype=np.uint8)
    return crop


def resize_center_crop(crop: np.ndarray, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` (bilinear) and centre-crop ``size`` x ``size``."""
    h, w = crop.shape[:2]
    scale = size / min(h, w)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    img = np.asarray(Image.fromarray(crop).resize((new_w, new_h), Image.Resampling.BILINEAR))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return img[top:top + size, left:left + size]


@torch.inference_mode()
def crop_embeddings(backbone: torch.nn.Module, crops: Sequence[np.ndarray], size: int,
                    batch_size: int) -> np.ndarray:
    """Global embeddings (n, D) float32 of instance crops (resize shorter side + centre crop)."""
    device = next(backbone.parameters()).device
    mean = torch.tensor(backbone.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(backbone.std, dtype=torch.float32).view(1, 3, 1, 1)
    out = []
    for start in range(0, len(crops), batch_size):
        batch = np.stack([resize_center_crop(c, size) for c in crops[start:start + batch_size]])
        x = torch.from_numpy(batch.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
        x = ((x - mean) / std).contiguous().to(device)
        _, glob = backbone(x)
        out.append(glob.float().cpu().numpy())
    if not out:
        return np.zeros((0, int(backbone.global_dim)), dtype=np.float32)
    return np.concatenate(out).astype(np.float32)
