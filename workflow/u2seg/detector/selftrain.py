"""Next-round pseudo-labels from a model's predictions on the training images (CutLER, docs/method.md §7.2).

Per image: the top ``max_per_image`` predictions by score, of which those with score >= ``score_thresh``
are kept; old pseudo-masks are kept too when their mask IoU with every kept prediction is
< ``iou_thresh``. Kept predictions take their predicted cluster as category.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from u2seg.coco_format import decode_mask, instance_annotation, instances_json
from u2seg.errors import UserError

log = logging.getLogger(__name__)


def round_threshold(thresholds: list[float], round_index: int) -> float:
    """Score threshold for training round ``round_index`` (>= 2): thresholds[n - 2], the last one repeated."""
    if round_index < 2:
        raise UserError(f"self-training labels are made for rounds >= 2, not {round_index}")
    if not thresholds:
        raise UserError("no self-training score thresholds configured")
    return float(thresholds[min(round_index - 2, len(thresholds) - 1)])


def _rle(seg: dict[str, Any]) -> dict[str, Any]:
    rle = dict(seg)
    if isinstance(rle["counts"], str):
        rle["counts"] = rle["counts"].encode("ascii")
    return rle


def next_round_labels(predictions: list[dict[str, Any]], previous: dict[str, Any], score_thresh: float,
                      iou_thresh: float = 0.5, max_per_image: int = 30) -> tuple[dict[str, Any], dict[str, int]]:
    """Merge kept predictions with non-overlapping old pseudo-masks -> (COCO instances dict, counts)."""
    images = {int(im["id"]): im for im in previous["images"]}
    preds: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for p in predictions:
        if int(p["image_id"]) in images:
            preds[int(p["image_id"])].append(p)
    old: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for a in previous.get("annotations", []):
        old[int(a["image_id"])].append(a)
    anns: list[dict[str, Any]] = []
    stats = {"kept_predictions": 0, "kept_old": 0, "dropped_old": 0}
    for image_id, im in images.items():
        h, w = int(im["height"]), int(im["width"])
        ranked = sorted(preds.get(image_id, []), key=lambda p: -float(p["score"]))[:max_per_image]
        kept = [p for p in ranked if float(p["score"]) >= score_thresh]
        kept_rles = [_rle(p["segmentation"]) for p in kept]
        for p in kept:
            mask = decode_mask(p["segmentation"], h, w)
            if mask.any():
                anns.append(instance_annotation(mask, len(anns) + 1, image_id, int(p["category_id"])))
                stats["kept_predictions"] += 1
        olds = old.get(image_id, [])
        if olds and kept_rles:
            old_rles = []
            for a in olds:
                seg = a["segmentation"]
                if isinstance(seg, list) or isinstance(seg.get("counts"), list):
                    seg = mask_utils.encode(np.asfortranarray(decode_mask(seg, h, w).astype(np.uint8)))
                old_rles.append(_rle(seg))
            ious = np.asarray(mask_utils.iou(old_rles, kept_rles, [0] * len(kept_rles))).reshape(len(olds), -1)
            keep_old = ious.max(axis=1) < iou_thresh
        else:
            keep_old = np.ones(len(olds), dtype=bool)
        for a, keep in zip(olds, keep_old):
            if not keep:
                stats["dropped_old"] += 1
                continue
            mask = decode_mask(a["segmentation"], h, w)
            anns.append(instance_annotation(mask, len(anns) + 1, image_id, int(a["category_id"])))
            stats["kept_old"] += 1
    info = {"description": f"u2seg self-training labels (score >= {score_thresh}, old IoU < {iou_thresh})"}
    return instances_json(list(previous["images"]), anns, list(previous.get("categories", [])), info), stats
