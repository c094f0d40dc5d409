"""Class-agnostic AP of MaskCut masks (all GT categories collapsed; crowd stays crowd)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import COCO_MINI, require_shared
from u2seg.coco_format import decode_mask, encode_mask, instance_annotation
from u2seg.maskcut.ap import class_agnostic_ap, class_agnostic_gt


def _box(h: int, w: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def _gt() -> dict:
    h, w = 80, 120
    anns = [instance_annotation(_box(h, w, 5, 5, 40, 50), 1, 1, 3),
            instance_annotation(_box(h, w, 45, 60, 75, 110), 2, 1, 17)]
    crowd = instance_annotation(_box(h, w, 0, 70, 30, 120), 3, 1, 3)
    crowd["iscrowd"] = 1
    return {"images": [{"id": 1, "file_name": "a.jpg", "width": w, "height": h}],
            "annotations": anns + [crowd],
            "categories": [{"id": 3, "name": "car"}, {"id": 17, "name": "cat"}]}


def test_perfect_masks_score_100_and_categories_collapse():
    gt = _gt()
    agnostic = class_agnostic_gt(gt)
    assert {a["category_id"] for a in agnostic["annotations"]} == {1}
    assert [a["iscrowd"] for a in agnostic["annotations"]] == [0, 0, 1]
    masks = {"images": gt["images"], "annotations": [dict(a, category_id=1) for a in gt["annotations"][:2]],
             "categories": [{"id": 1, "name": "fg"}]}
    res = class_agnostic_ap(gt, masks)
    assert res["segm"]["AP"] == res["bbox"]["AP"] == 100.0
    # a detection on the crowd region is ignored, not a false positive
    masks["annotations"].append(instance_annotation(_box(80, 120, 2, 75, 28, 118), 9, 1, 1))
    assert class_agnostic_ap(gt, masks)["segm"]["AP"] == 100.0
    # a detection on nothing is a false positive: ranked first it lowers AP, ranked last it does not
    false_pos = instance_annotation(_box(80, 120, 60, 0, 80, 30), 10, 1, 1)
    first = {**masks, "annotations": [false_pos] + masks["annotations"]}
    last = {**masks, "annotations": masks["annotations"] + [false_pos]}
    assert class_agnostic_ap(gt, first, score="rank")["segm"]["AP"] < 100.0
    assert class_agnostic_ap(gt, last, score="rank")["segm"]["AP"] == 100.0


def test_no_masks_and_unknown_images():
    gt = _gt()
    res = class_agnostic_ap(gt, {"images": gt["images"], "annotations": [], "categories": []})
    assert res["segm"]["AP50"] == 0.0 and res["bbox"]["AR100"] == 0.0
    with pytest.raises(ValueError, match="not in the ground truth"):
        class_agnostic_ap(gt, {"images": [{"id": 99, "width": 1, "height": 1}], "annotations": []})


def test_coco_mini_gt_against_itself():
    """The real coco-mini val annotations (polygons + crowd RLE) as detections: AP50 = 100."""
    root = require_shared(COCO_MINI)
    gt = json.loads((root / "annotations" / "instances_val2017.json").read_text())
    images = sorted(gt["images"], key=lambda im: im["id"])[:5]
    ids = {im["id"] for im in images}
    sizes = {im["id"]: (im["height"], im["width"]) for im in images}
    anns = []
    for a in gt["annotations"]:
        if a["image_id"] in ids and not a.get("iscrowd", 0):
            m = decode_mask(a["segmentation"], *sizes[a["image_id"]])
            anns.append({**instance_annotation(m, len(anns) + 1, a["image_id"], 1), "segmentation": encode_mask(m)})
    res = class_agnostic_ap(gt, {"images": images, "annotations": anns})
    assert res["segm"]["AP50"] == 100.0 and res["bbox"]["AP50"] == 100.0
