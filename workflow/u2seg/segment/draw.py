"""Overlays of a segmentation: ``image | instances | panoptic | semantic`` side by side, with a legend.

Colours and legend are the report's (:mod:`u2seg.gallery`, :mod:`u2seg.report.images`): thing cluster c
is ``c<c>`` in the thing palette, stuff class s is ``s<s>`` in the stuff palette. Large images are drawn
at a bounded size (each panel's long side at most ``max_side``; the whole overlay as the report's images).
"""
from __future__ import annotations

from typing import Any

import numpy as np

MAX_SIDE = 1024  # long side (pixels) at which each panel is drawn
PANEL_HEIGHT = 384


def _shrink(array: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    import cv2

    if array.shape[1] == size[0] and array.shape[0] == size[1]:
        return array
    return cv2.resize(np.ascontiguousarray(array), size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def draw(image: np.ndarray, result: Any, score_thresh: float | None = None,
         max_side: int = MAX_SIDE, height: int = PANEL_HEIGHT) -> np.ndarray:
    """The overlay (uint8 RGB) of ``result`` (a :class:`u2seg.segment.api.SegmentResult`) on ``image``: instances with score >= ``score_thresh``
    (default: the panoptic fusion's instance threshold, 0.5; the best three when none is) labelled with
    cluster id and score, the panoptic map (void black) and the semantic map."""
    import cv2

    from u2seg.coco_format import decode_mask
    from u2seg.gallery import blend, color_labels, overlay_instances, palette, panel
    from u2seg.report.images import MAX_SIDE as MAX_OVERLAY_SIDE, STUFF_PALETTE_OFFSET, bounded, cluster_legend, \
        with_legend

    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = _shrink(image, size, nearest=False)
    k, s = result.num_things, result.num_stuff
    thing_colors, stuff_colors = palette(max(k, 1)), palette(max(s, 1), offset=STUFF_PALETTE_OFFSET)
    inst = result.instances
    thresh = 0.5 if score_thresh is None else score_thresh
    order = [int(i) for i in np.argsort(-inst.scores, kind="stable")]
    kept = [i for i in order if inst.scores[i] >= thresh] or order[:3]
    masks = [_shrink(decode_mask(inst.rles[i], h, w).astype(np.uint8), size, nearest=True).astype(bool) for i in kept]
    inst_img = overlay_instances(small, masks, [int(inst.category_ids[i]) - 1 for i in kept], thing_colors)
    for i in kept:
        x0, y0 = (float(v) * scale for v in inst.boxes[i][:2])
        cv2.putText(inst_img, f"{inst.scores[i]:.2f}", (int(x0) + 2, int(y0) + 12), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4, (255, 255, 0), 1, cv2.LINE_AA)
    above = sum(inst.scores[i] >= thresh for i in kept)
    tiles = [small, inst_img]
    titles = ["image", f"{above} instances >= {thresh:g}" if above else f"top {len(kept)}, all < {thresh:g}"]
    pan = _shrink(result.panoptic, size, nearest=True)
    colored = np.zeros(small.shape, dtype=np.uint8)
    for seg in result.segments:
        c = int(seg["category_id"])
        colored[pan == int(seg["id"])] = thing_colors[(c - 1) % len(thing_colors)] if c <= k else \
            stuff_colors[(c - k - 1) % len(stuff_colors)]
    pan_img = blend(small, colored, pan > 0, 0.7)
    pan_img[pan == 0] = 0
    tiles.append(pan_img)
    titles.append(f"panoptic ({len(result.segments)} segments)")
    shown = [{"category_id": int(inst.category_ids[i])} for i in kept] + list(result.segments)
    if result.semantic is not None:
        sem = _shrink(result.semantic, size, nearest=True).astype(np.int64)
        sem_img = blend(small, color_labels(sem - 1, stuff_colors), sem > 0, 0.7)
        tiles.append(sem_img)
        titles.append("semantic")
        shown += [{"category_id": k + int(c)} for c in np.unique(sem) if c > 0]
    out = bounded(panel(tiles, titles, height), MAX_OVERLAY_SIDE)
    return bounded(with_legend(out, cluster_legend(shown, k, s)), MAX_OVERLAY_SIDE)
