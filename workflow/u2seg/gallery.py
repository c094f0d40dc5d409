"""Gallery PNGs of every stage: image samples, palettes and overlays (one visualisation module).

MaskCut overlays (:func:`gallery_ids`, :func:`overlay`): a seeded hash sample of the dataset's images and
each mask blended in its colour. Pseudo-labels (:func:`pseudo_label_tile`): a gallery tile is
``[image | stuff clusters | instances by cluster | panoptic]``; colours are a fixed function of the
cluster id, so the same cluster has the same colour in every image. The report reuses the palettes.
"""
from __future__ import annotations

import colorsys
import hashlib
from typing import Iterable, Sequence

import cv2
import numpy as np
from scipy import ndimage

GOLDEN = 0.618033988749895


def palette(n: int, offset: float = 0.0) -> np.ndarray:
    """(n, 3) uint8 distinct colours: golden-ratio hue steps, alternating saturation/value."""
    colors = np.zeros((max(n, 0), 3), dtype=np.uint8)
    for i in range(n):
        hue = (offset + i * GOLDEN) % 1.0
        sat = (0.95, 0.6, 0.8)[i % 3]
        val = (0.95, 0.75, 0.55)[(i // 3) % 3]
        colors[i] = np.round(np.array(colorsys.hsv_to_rgb(hue, sat, val)) * 255)
    return colors


def gallery_indices(n_images: int, size: int) -> list[int]:
    """A fixed, evenly spaced sample of ``size`` image indices out of ``n_images``."""
    if size <= 0 or n_images == 0:
        return []
    if size >= n_images:
        return list(range(n_images))
    return sorted({int(round(i * (n_images - 1) / (size - 1))) if size > 1 else 0 for i in range(size)})


def color_labels(labels: np.ndarray, colors: np.ndarray, void_color: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """RGB image of a label map; labels outside ``0..len(colors)-1`` get ``void_color``."""
    out = np.empty(labels.shape + (3,), dtype=np.uint8)
    out[:] = np.asarray(void_color, dtype=np.uint8)
    ok = (labels >= 0) & (labels < len(colors))
    out[ok] = colors[labels[ok]]
    return out


def blend(image: np.ndarray, color: np.ndarray, where: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Alpha-blend ``color`` (H, W, 3) over ``image`` where ``where`` is true."""
    out = image.astype(np.float32).copy()
    out[where] = (1 - alpha) * out[where] + alpha * color[where].astype(np.float32)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _label_text(img: np.ndarray, text: str, x: int, y: int, scale: float = 0.45) -> None:
    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def overlay_instances(image: np.ndarray, masks: Sequence[np.ndarray], clusters: Sequence[int],
                      colors: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Instances filled with their cluster's colour (largest first), outlined, with the cluster id."""
    out = image.copy()
    order = sorted(range(len(masks)), key=lambda i: -int(masks[i].sum()))
    for i in order:
        m = masks[i].astype(bool)
        col = np.broadcast_to(colors[clusters[i] % len(colors)], out.shape)
        out = blend(out, col, m, alpha)
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (255, 255, 255), 1)
    for i in order:
        ys, xs = np.nonzero(masks[i])
        if len(xs):
            _label_text(out, str(int(clusters[i]) + 1), int(xs.mean()), int(ys.mean()))
    return out


def _fit(tile: np.ndarray, height: int) -> np.ndarray:
    scale = height / tile.shape[0]
    width = max(1, round(tile.shape[1] * scale))
    return cv2.resize(tile, (width, height), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST)


def panel(tiles: Sequence[np.ndarray], titles: Sequence[str], height: int = 320) -> np.ndarray:
    """Tiles side by side at a common height, each with a title, 4 px white gaps."""
    parts = []
    for tile, title in zip(tiles, titles):
        t = _fit(np.ascontiguousarray(tile), height).copy()
        _label_text(t, title, 6, 18, 0.5)
        parts.append(t)
        parts.append(np.full((height, 4, 3), 255, dtype=np.uint8))
    return np.concatenate(parts[:-1], axis=1)


def pseudo_label_tile(image: np.ndarray, stuff: np.ndarray, masks: Sequence[np.ndarray],
                      clusters: Sequence[int], pan_semantic: np.ndarray, num_things: int,
                      num_stuff: int, height: int = 320) -> np.ndarray:
    """Gallery tile: image, stuff clusters, instances by cluster, merged panoptic (void black).

    ``pan_semantic``: (H, W) panoptic category per pixel (0 = void, 1..K things, K+1.. stuff)."""
    thing_colors = palette(num_things)
    stuff_colors = palette(num_stuff, offset=0.31)
    stuff_rgb = blend(image, color_labels(stuff, stuff_colors), stuff < num_stuff, 0.6)
    inst_rgb = overlay_instances(image, masks, clusters, thing_colors)
    cat = pan_semantic.astype(np.int64)
    merged = np.zeros(image.shape, dtype=np.uint8)
    is_thing = (cat >= 1) & (cat <= num_things)
    is_stuff = cat > num_things
    merged[is_thing] = thing_colors[cat[is_thing] - 1]
    merged[is_stuff] = stuff_colors[(cat[is_stuff] - num_things - 1) % max(num_stuff, 1)]
    merged = blend(image, merged, is_thing | is_stuff, 0.7)
    merged[~(is_thing | is_stuff)] = 0
    return panel([image, stuff_rgb, inst_rgb, merged],
                 ["image", f"stuff ({num_stuff})", f"instances (K={num_things})", "panoptic"], height)


# ------------------------------------------------------------------------------------ MaskCut overlays
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
