"""Cluster -> class mappings (docs/method.md §8.1(a), §8.3): one rule each, no hand-edited constants.

Both rules read a (clusters x classes) overlap matrix:

* ``majority_assign``: many-to-one; each cluster takes its most-voted class (ties: lowest class
  index), clusters without any vote stay unmapped (-1). U2Seg's released "hungarian_matching".
* ``hungarian_assign``: strict one-to-one ``scipy.optimize.linear_sum_assignment`` maximising the
  total overlap; pairs with zero overlap are not matches, so at most min(K, C) clusters are mapped.

``instance_votes`` builds the instance overlap matrix as U2Seg does: every prediction with
score >= ``min_score`` votes (cluster, GT class) for every GT of its image with IoU > ``min_iou``
(box or mask IoU; crowd GT included or not).
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment

from u2seg.errors import UserError


def majority_assign(matrix: np.ndarray) -> np.ndarray:
    """Per row (cluster): column of the largest entry, -1 for all-zero rows."""
    matrix = np.asarray(matrix)
    out = np.argmax(matrix, axis=1).astype(np.int64) if matrix.shape[1] else np.zeros(len(matrix), np.int64)
    out[matrix.sum(axis=1) <= 0] = -1
    return out


def hungarian_assign(matrix: np.ndarray) -> np.ndarray:
    """One-to-one assignment maximising the summed overlap; -1 for unmatched rows."""
    matrix = np.asarray(matrix, dtype=np.float64)
    out = np.full(matrix.shape[0], -1, dtype=np.int64)
    if matrix.size == 0:
        return out
    rows, cols = linear_sum_assignment(matrix, maximize=True)
    keep = matrix[rows, cols] > 0
    out[rows[keep]] = cols[keep]
    return out


def fallback_classes(matrix: np.ndarray, class_frequency: np.ndarray) -> np.ndarray:
    """Class charged with the false positives of each cluster left unmatched by the Hungarian
    rule: its most-overlapping class, or the most frequent GT class for clusters without overlap."""
    out = majority_assign(matrix)
    out[out < 0] = int(np.argmax(class_frequency)) if len(class_frequency) else -1
    return out


def _gt_rle(ann: dict[str, Any], height: int, width: int) -> Any:
    seg = ann["segmentation"]
    if isinstance(seg, list):
        return mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    if isinstance(seg.get("counts"), list):
        return mask_utils.frPyObjects(seg, height, width)
    return _compressed(seg)


def _compressed(seg: dict[str, Any]) -> dict[str, Any]:
    counts = seg["counts"]
    return {"size": list(seg["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def instance_votes(detections: Iterable[dict[str, Any]], gt: dict[str, Any], cluster_ids: list[int],
                   class_ids: list[int], min_score: float, min_iou: float, iou_type: str = "bbox",
                   include_crowd: bool = True) -> np.ndarray:
    """(clusters x classes) vote counts: a detection of cluster k with score >= ``min_score``
    votes for the class of every GT of its image whose IoU with it exceeds ``min_iou``."""
    if iou_type not in ("bbox", "segm"):
        raise UserError(f"iou_type must be bbox or segm, got {iou_type!r}")
    k_index = {c: i for i, c in enumerate(cluster_ids)}
    c_index = {c: i for i, c in enumerate(class_ids)}
    votes = np.zeros((len(cluster_ids), len(class_ids)), dtype=np.int64)
    sizes = {int(im["id"]): (int(im["height"]), int(im["width"])) for im in gt["images"]}
    gts: dict[int, list[dict[str, Any]]] = {}
    for ann in gt["annotations"]:
        if include_crowd or not ann.get("iscrowd", 0):
            if int(ann["category_id"]) in c_index:
                gts.setdefault(int(ann["image_id"]), []).append(ann)
    dets: dict[int, list[dict[str, Any]]] = {}
    for det in detections:
        if float(det.get("score", 1.0)) >= min_score and int(det["category_id"]) in k_index:
            dets.setdefault(int(det["image_id"]), []).append(det)
    for image_id, image_dets in dets.items():
        image_gts = gts.get(image_id)
        if not image_gts:
            continue
        h, w = sizes[image_id]
        if iou_type == "bbox":
            d = [list(map(float, x["bbox"])) for x in image_dets]
            g = [list(map(float, x["bbox"])) for x in image_gts]
        else:
            if any("segmentation" not in x for x in image_dets):
                raise UserError("iou_type segm needs masks, but some predictions have only boxes")
            d = [_compressed(x["segmentation"]) for x in image_dets]
            g = [_gt_rle(x, h, w) for x in image_gts]
        iou = np.asarray(mask_utils.iou(d, g, [0] * len(g)), dtype=np.float64).reshape(len(d), len(g))
        rows = np.array([k_index[int(x["category_id"])] for x in image_dets])
        cols = np.array([c_index[int(x["category_id"])] for x in image_gts])
        di, gi = np.nonzero(iou > min_iou)
        np.add.at(votes, (rows[di], cols[gi]), 1)
    return votes


def mapping_dict(assignment: np.ndarray, cluster_ids: list[int], class_ids: list[int]) -> dict[int, int]:
    """{cluster id: class id} for the mapped clusters of an assignment vector."""
    return {int(cluster_ids[k]): int(class_ids[c]) for k, c in enumerate(assignment) if c >= 0}
