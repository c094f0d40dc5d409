"""Class-agnostic COCO AP of class-agnostic masks (CutLER protocol, docs/method.md §8.2; pycocotools).

Every ground-truth category is collapsed into one ``fg`` class (crowd regions stay crowd); each
MaskCut mask becomes a detection of that class. MaskCut masks carry no score: by default every
mask scores 1.0 (pycocotools then ranks them in file order, stably); ``score="rank"`` scores the
k-th mask of an image 1 / k instead.
"""
from __future__ import annotations

import copy
from typing import Any


METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")


def class_agnostic_gt(gt: dict[str, Any], image_ids: set[int] | None = None) -> dict[str, Any]:
    """A copy of a COCO instances dict with every category collapsed to id 1 ``fg`` (iscrowd kept)."""
    images = [im for im in gt["images"] if image_ids is None or im["id"] in image_ids]
    keep = {im["id"] for im in images}
    anns = []
    for ann in gt["annotations"]:
        if ann["image_id"] in keep:
            a = copy.deepcopy(ann)
            a["category_id"] = 1
            a.setdefault("iscrowd", 0)
            anns.append(a)
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "fg"}]}


def masks_to_detections(masks: dict[str, Any], score: str = "one") -> list[dict[str, Any]]:
    """COCO results (segmentation, bbox, score, category 1) from a MaskCut instances dict."""
    rank: dict[int, int] = {}
    out = []
    for ann in masks["annotations"]:
        k = rank[ann["image_id"]] = rank.get(ann["image_id"], 0) + 1
        out.append({"image_id": ann["image_id"], "category_id": 1, "segmentation": ann["segmentation"],
                    "bbox": ann["bbox"], "score": 1.0 if score == "one" else 1.0 / k})
    return out


def class_agnostic_ap(gt: dict[str, Any], masks: dict[str, Any], score: str = "one",
                      iou_types: tuple[str, ...] = ("bbox", "segm")) -> dict[str, dict[str, float]]:
    """Box and mask AP/AP50/AP75/AR of ``masks`` against ``gt`` on the images of ``masks`` (in %)."""
    from u2seg.evaluation.instance import coco_eval

    image_ids = {im["id"] for im in masks["images"]}
    missing = image_ids - {im["id"] for im in gt["images"]}
    if missing:
        raise ValueError(f"{len(missing)} MaskCut images are not in the ground truth (e.g. {sorted(missing)[:3]})")
    cgt = class_agnostic_gt(gt, image_ids)
    dets = masks_to_detections(masks, score)
    results: dict[str, dict[str, float]] = {}
    for iou_type in iou_types:
        stats = coco_eval(cgt, dets, iou_type)
        # None (no GT in an area range) -> 0
        results[iou_type] = {m: round(stats[m] or 0.0, 2) for m in METRICS}
    return results
