"""Instance AP through pycocotools' COCOeval (box and mask).

* ``class_agnostic``: CutLER's protocol (docs/method.md §8.2): every GT and predicted category collapsed into
  one class, crowd GT kept as crowd, standard COCOeval (maxDets 1/10/100).
* ``matched``: predictions relabelled by a cluster -> class mapping. Predictions of unmapped
  clusters are either dropped (U2Seg's majority protocol) or charged as false positives of a given
  class (strict Hungarian protocol): they are moved onto a GT-free copy of their image, where
  COCOeval can only count them as false positives.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from u2seg.errors import UserError

log = logging.getLogger(__name__)

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def detections_from_json(data: Any, image_ids: set[int]) -> tuple[list[dict[str, Any]], str]:
    """Detections from a COCO results list or a COCO instances json (MaskCut / pseudo-labels).

    Instances without a ``score`` are scored by their order within the image (1 / (1 + rank)),
    so the first mask MaskCut found ranks highest. Returns (detections, how scores were set).
    """
    if isinstance(data, dict):
        if "annotations" not in data:
            raise UserError("instances json has no 'annotations'")
        anns = data["annotations"]
    elif isinstance(data, list):
        anns = data
    else:
        raise UserError("predictions must be a COCO results list or a COCO instances json")
    scored = all("score" in a for a in anns)
    rank: dict[int, int] = {}
    dets = []
    dropped = 0
    for a in anns:
        image_id = int(a["image_id"])
        if image_id not in image_ids:
            dropped += 1
            continue
        det = {"image_id": image_id, "category_id": int(a.get("category_id", 1))}
        if "bbox" in a:
            det["bbox"] = [float(v) for v in a["bbox"]]
        if "segmentation" in a:
            det["segmentation"] = a["segmentation"]
        if "bbox" not in det and "segmentation" not in det:
            raise UserError(f"prediction for image {image_id} has neither bbox nor segmentation")
        if scored:
            det["score"] = float(a["score"])
        else:
            r = rank.get(image_id, 0)
            rank[image_id] = r + 1
            det["score"] = 1.0 / (1.0 + r)
        dets.append(det)
    if dropped:
        log.warning("%d predictions are for images outside the evaluated set; ignored", dropped)
    return dets, "given" if scored else "rank within image: 1 / (1 + rank)"


def check_detections(dets: list[dict[str, Any]], gt: dict[str, Any]) -> None:
    """Fail clearly when a mask's size differs from its GT image."""
    sizes = {int(im["id"]): [int(im["height"]), int(im["width"])] for im in gt["images"]}
    for d in dets:
        seg = d.get("segmentation")
        if isinstance(seg, dict) and [int(v) for v in seg["size"]] != sizes[d["image_id"]]:
            raise UserError(f"image {d['image_id']}: mask size {seg['size']} != image size "
                            f"{sizes[d['image_id']]} (height, width)")


def _coco(dataset: dict[str, Any]) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def coco_eval(gt: dict[str, Any], dets: list[dict[str, Any]], iou_type: str,
              max_dets: int = 100) -> dict[str, float | None]:
    """COCOeval statistics (x100; None where COCOeval reports -1) of ``dets`` against ``gt``."""
    if iou_type not in ("bbox", "segm"):
        raise ValueError(iou_type)
    gt = {"images": gt["images"], "annotations": copy.deepcopy(gt["annotations"]),
          "categories": gt["categories"]}
    for i, ann in enumerate(gt["annotations"], start=1):
        ann.setdefault("id", i)
    coco_gt = _coco(gt)
    # One geometry field per IoU type: loadRes derives each detection's area (the small / medium / large
    # ranges) from the bbox when one is present, so mask AP would size instances by their boxes.
    drop = "segmentation" if iou_type == "bbox" else "bbox"
    usable = [{k: v for k, v in d.items() if k != drop} for d in dets
              if (iou_type == "bbox" and "bbox" in d) or (iou_type == "segm" and "segmentation" in d)]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        if usable:
            coco_dt = coco_gt.loadRes(copy.deepcopy(usable))
        else:
            coco_dt = _coco({"images": gt["images"], "annotations": [], "categories": gt["categories"]})
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.params.imgIds = [int(im["id"]) for im in gt["images"]]
        ev.params.maxDets = [1, 10, int(max_dets)]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    log.debug("COCOeval %s:\n%s", iou_type, buf.getvalue())
    return {name: (None if v < 0 else float(v) * 100.0) for name, v in zip(STAT_NAMES, ev.stats)}


def class_agnostic_gt(gt: dict[str, Any]) -> dict[str, Any]:
    """GT with every category collapsed into one class ``fg`` (id 1); crowd flags kept."""
    anns = [dict(a, category_id=1) for a in gt["annotations"]]
    return {"images": gt["images"], "annotations": anns,
            "categories": [{"id": 1, "name": "fg", "supercategory": "fg"}]}


def class_agnostic(gt: dict[str, Any], dets: list[dict[str, Any]], max_dets: int = 100,
                   iou_types: tuple[str, ...] = ("bbox", "segm")) -> dict[str, Any]:
    """CutLER class-agnostic AP / AR, box and mask."""
    cgt = class_agnostic_gt(gt)
    cdets = [dict(d, category_id=1) for d in dets]
    return {t: coco_eval(cgt, cdets, t, max_dets) for t in iou_types}


def relabel(gt: dict[str, Any], dets: list[dict[str, Any]], mapping: dict[int, int],
            fp_class: dict[int, int] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, int]]:
    """Apply a cluster -> class mapping. Unmapped clusters are dropped, or - for clusters in
    ``fp_class`` - relabelled to that class and moved to a GT-free copy of their image."""
    fp_class = fp_class or {}
    offset = max((int(im["id"]) for im in gt["images"]), default=0) + 1
    out: list[dict[str, Any]] = []
    counts = {"mapped": 0, "charged_as_fp": 0, "dropped": 0}
    phantom: set[int] = set()
    for d in dets:
        c = int(d["category_id"])
        if c in mapping:
            out.append(dict(d, category_id=mapping[c]))
            counts["mapped"] += 1
        elif c in fp_class:
            out.append(dict(d, category_id=fp_class[c], image_id=offset + d["image_id"]))
            phantom.add(d["image_id"])
            counts["charged_as_fp"] += 1
        else:
            counts["dropped"] += 1
    images = list(gt["images"]) + [dict(im, id=offset + int(im["id"])) for im in gt["images"]
                                   if int(im["id"]) in phantom]
    return {"images": images, "annotations": gt["annotations"], "categories": gt["categories"]}, out, counts


def matched(gt: dict[str, Any], dets: list[dict[str, Any]], mapping: dict[int, int],
            fp_class: dict[int, int] | None = None, max_dets: int = 100,
            iou_types: tuple[str, ...] = ("bbox", "segm")) -> dict[str, Any]:
    """Cluster-matched AP (box and mask) after ``relabel``."""
    rgt, rdets, counts = relabel(gt, dets, mapping, fp_class)
    result: dict[str, Any] = {t: coco_eval(rgt, rdets, t, max_dets) for t in iou_types}
    result["predictions"] = counts
    return result


def class_frequency(gt: dict[str, Any], class_ids: list[int]) -> np.ndarray:
    """Number of non-crowd GT instances per class."""
    index = {c: i for i, c in enumerate(class_ids)}
    freq = np.zeros(len(class_ids), dtype=np.int64)
    for a in gt["annotations"]:
        if not a.get("iscrowd", 0) and int(a["category_id"]) in index:
            freq[index[int(a["category_id"])]] += 1
    return freq
