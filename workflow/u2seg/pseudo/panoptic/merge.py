"""Panoptic merge of pseudo-instances and a stuff map (docs/method.md §6), as a pure function over arrays.

Rules per image:
1. things are painted in order of descending box area (w * h of the mask's tight box), so smaller
   instances overwrite larger ones; ties keep the input order (the later one is painted on top);
2. instances left without any visible pixel are dropped;
3. stuff cluster c (0-based) becomes one segment (all its connected pieces together) made of its
   pixels not covered by things, unless more than ``max_thing_overlap`` of the cluster's pixels are
   covered by things (then it is dropped: its free pixels stay void);
4. everything else is void (id 0).

Categories: things 1..K (cluster + 1), stuff K+1..K+S (cluster c -> K + 1 + c).
Semantic-branch target: 0 = thing pixel, 1..S = stuff cluster c + 1, 255 = void.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from u2seg.coco_format import mask_bbox

VOID = 255
MAX_SEGMENT_ID = 256 ** 3 - 1  # largest id an RGB panoptic PNG can hold


@dataclass
class PanopticImage:
    """One merged image."""

    pan: np.ndarray  # (H, W) int64 segment ids, 0 = void
    segments: list[dict[str, Any]]  # COCO panoptic segments_info (id, category_id, iscrowd, area, bbox)
    semantic: np.ndarray  # (H, W) uint8: 0 thing, 1..S stuff, 255 void
    thing_source: dict[int, int] = field(default_factory=dict)  # segment id -> input instance index
    hidden: int = 0  # instances dropped because nothing of them stayed visible
    stuff_dropped: int = 0  # stuff clusters present in the image but dropped by the overlap rule


def paint_order(masks: Sequence[np.ndarray]) -> list[int]:
    """Indices of ``masks`` by descending box area (stable: equal areas keep input order)."""
    areas = []
    for m in masks:
        _, _, w, h = mask_bbox(m)
        areas.append(w * h)
    return sorted(range(len(masks)), key=lambda i: -areas[i])


def merge_panoptic(masks: Sequence[np.ndarray], thing_categories: Sequence[int], stuff: np.ndarray,
                   num_things: int, num_stuff: int, max_thing_overlap: float = 0.7,
                   first_id: int = 1) -> PanopticImage:
    """Merge instance masks (bool (H, W), categories 1..K) and a stuff map ((H, W), clusters
    0..S-1, any other value = unlabelled) into one panoptic image; segment ids start at ``first_id``."""
    stuff = np.asarray(stuff)
    if stuff.ndim != 2:
        raise ValueError(f"stuff map must be 2-D, got shape {stuff.shape}")
    if len(masks) != len(thing_categories):
        raise ValueError("masks and thing_categories must have the same length")
    if not 0.0 <= max_thing_overlap <= 1.0:
        raise ValueError("max_thing_overlap must be in [0, 1]")
    if num_stuff > 254:
        raise ValueError("at most 254 stuff clusters fit the uint8 semantic PNG (255 = void)")
    shape = stuff.shape
    for i, (m, cat) in enumerate(zip(masks, thing_categories)):
        if m.shape != shape:
            raise ValueError(f"instance {i}: mask shape {m.shape} differs from the stuff map {shape}")
        if not 1 <= int(cat) <= num_things:
            raise ValueError(f"instance {i}: category {cat} outside 1..{num_things}")

    # 1-2: things, largest box first; `canvas` holds instance index + 1
    canvas = np.zeros(shape, dtype=np.int32)
    for i in paint_order(masks):
        canvas[np.asarray(masks[i], dtype=bool)] = i + 1
    visible = [int(v) - 1 for v in np.unique(canvas) if v > 0]
    hidden = len(masks) - len(visible)

    # local label image: 1..T things (in input order of the visible instances), then stuff
    local = np.zeros(shape, dtype=np.int32)
    categories: list[int] = []
    thing_local: dict[int, int] = {}
    remap = np.zeros(len(masks) + 1, dtype=np.int32)
    for i in visible:
        categories.append(int(thing_categories[i]))
        remap[i + 1] = len(categories)
        thing_local[len(categories)] = i
    local[:] = remap[canvas]
    semantic = np.full(shape, VOID, dtype=np.uint8)
    things = canvas > 0
    semantic[things] = 0

    # 3: stuff clusters
    stuff_dropped = 0
    for c in range(num_stuff):
        in_c = stuff == c
        total = int(in_c.sum())
        if total == 0:
            continue
        free = in_c & ~things
        n_free = int(free.sum())
        if n_free == 0:
            continue
        if (total - n_free) / total > max_thing_overlap:
            stuff_dropped += 1
            continue
        categories.append(num_things + 1 + c)
        local[free] = len(categories)
        semantic[free] = c + 1

    # areas and boxes from the final pixels
    n = len(categories)
    if first_id < 1 or first_id + n - 1 > MAX_SEGMENT_ID:
        raise ValueError(f"segment ids {first_id}..{first_id + n - 1} do not fit an RGB panoptic PNG")
    areas = np.bincount(local.ravel(), minlength=n + 1)
    slices = ndimage.find_objects(local, max_label=n)
    segments: list[dict[str, Any]] = []
    for j in range(1, n + 1):
        sl = slices[j - 1]
        y, x = sl[0].start, sl[1].start
        h, w = sl[0].stop - y, sl[1].stop - x
        segments.append({"id": first_id + j - 1, "category_id": categories[j - 1], "iscrowd": 0,
                         "area": int(areas[j]), "bbox": [int(x), int(y), int(w), int(h)]})
    pan = np.where(local > 0, local.astype(np.int64) + (first_id - 1), 0)
    thing_source = {first_id + j - 1: i for j, i in thing_local.items()}
    return PanopticImage(pan=pan, segments=segments, semantic=semantic, thing_source=thing_source,
                         hidden=hidden, stuff_dropped=stuff_dropped)


def panoptic_categories(num_things: int, num_stuff: int) -> list[dict[str, Any]]:
    """Category list of the panoptic json: things 1..K, stuff K+1..K+S."""
    width = max(3, len(str(max(num_things, num_stuff))))
    cats = [{"id": i + 1, "name": f"cluster_{i + 1:0{width}d}", "supercategory": "thing", "isthing": 1}
            for i in range(num_things)]
    cats += [{"id": num_things + 1 + c, "name": f"stuff_{c + 1:0{width}d}", "supercategory": "stuff",
              "isthing": 0} for c in range(num_stuff)]
    return cats


def thing_categories(num_things: int) -> list[dict[str, Any]]:
    """Category list of the class-aware instance json: clusters 1..K."""
    return panoptic_categories(num_things, 0)
