"""Instance AP: equality with pycocotools on coco-mini, perfect = 100, matched AP hand cases."""
from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tests.conftest import COCO_MINI, require_shared
from u2seg.coco_format import decode_mask, encode_mask
from u2seg.evaluation import instance


def _mini_gt(n=20):
    path = require_shared(COCO_MINI) / "annotations" / "instances_val2017.json"
    data = json.loads(path.read_text())
    images = sorted(data["images"], key=lambda im: im["id"])[:n]
    keep = {im["id"] for im in images}
    return {"images": images, "annotations": [a for a in data["annotations"] if a["image_id"] in keep],
            "categories": data["categories"]}


def _perturbed(gt, seed=0):
    """Jittered GT boxes / masks with random scores and clusters, some misses, some junk."""
    rng = np.random.default_rng(seed)
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    dets = []
    for a in gt["annotations"]:
        if a["iscrowd"] or rng.random() < 0.2:
            continue
        h, w = sizes[a["image_id"]]
        m = decode_mask(a["segmentation"], h, w)
        m = np.roll(m, int(rng.integers(-3, 4)), axis=1)
        x, y, bw, bh = a["bbox"]
        box = [x + rng.normal(0, 2), y + rng.normal(0, 2), bw * rng.uniform(0.8, 1.2), bh * rng.uniform(0.8, 1.2)]
        dets.append({"image_id": a["image_id"], "category_id": int(rng.integers(1, 6)), "bbox": box,
                     "segmentation": encode_mask(m), "score": float(rng.random())})
    for im in gt["images"]:
        m = np.zeros((im["height"], im["width"]), bool)
        m[10:60, 20:90] = True
        dets.append({"image_id": im["id"], "category_id": 1, "bbox": [20.0, 10.0, 70.0, 50.0],
                     "segmentation": encode_mask(m), "score": float(rng.random())})
    return dets


def _reference(gt, dets, iou_type):
    """Plain pycocotools, categories collapsed by hand; mask AP gets detections without their box (as
    detectron2's evaluator passes them) so that instances are sized by their mask area."""
    g = copy.deepcopy(gt)
    for a in g["annotations"]:
        a["category_id"] = 1
    g["categories"] = [{"id": 1, "name": "fg"}]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = g
        coco.createIndex()
        drop = "segmentation" if iou_type == "bbox" else "bbox"
        res = coco.loadRes([{k: v for k, v in dict(d, category_id=1).items() if k != drop}
                            for d in copy.deepcopy(dets)])
        ev = COCOeval(coco, res, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_class_agnostic_equals_pycocotools():
    gt = _mini_gt()
    dets = _perturbed(gt)
    ours = instance.class_agnostic(gt, dets)
    for t in ("bbox", "segm"):
        ref = _reference(gt, dets, t)
        got = [ours[t][k] for k in instance.STAT_NAMES]
        assert got == pytest.approx([None if v < 0 else 100 * v for v in ref])
        assert 0 < ours[t]["AP"] < 100


def test_perfect_prediction_is_100():
    gt = _mini_gt(10)
    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    dets = [{"image_id": a["image_id"], "category_id": 7, "bbox": a["bbox"], "score": 1.0,
             "segmentation": encode_mask(decode_mask(a["segmentation"], *sizes[a["image_id"]]))}
            for a in gt["annotations"] if not a["iscrowd"]]
    res = instance.class_agnostic(gt, dets)
    assert res["bbox"]["AP"] == pytest.approx(100) and res["segm"]["AP"] == pytest.approx(100)


def _toy():
    gt = {"images": [{"id": 1, "height": 50, "width": 50}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10], "area": 100,
                           "iscrowd": 0, "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]]}],
          "categories": [{"id": 3, "name": "c"}, {"id": 4, "name": "d"}]}
    dets = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},
            {"image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 10], "score": 0.95}]
    return gt, dets


def test_unmatched_clusters_dropped_or_counted_as_false_positives():
    gt, dets = _toy()
    # majority: cluster 2 unmapped -> dropped -> AP 100
    res = instance.matched(gt, dets, {1: 3}, None, iou_types=("bbox",))
    assert res["bbox"]["AP"] == pytest.approx(100) and res["predictions"]["dropped"] == 1
    # strict: cluster 2 is a false positive of class 3 with a higher score: precision 1/2 at recall 1
    res = instance.matched(gt, dets, {1: 3}, {2: 3}, iou_types=("bbox",))
    assert res["bbox"]["AP"] == pytest.approx(50) and res["predictions"]["charged_as_fp"] == 1
    # ... and it can never become a true positive, even though it overlaps the GT perfectly
    res = instance.matched(gt, dets, {}, {2: 3, 1: 3}, iou_types=("bbox",))
    assert res["bbox"]["AP"] == pytest.approx(0)


def test_detections_from_instances_json_are_ranked_by_order():
    data = {"images": [], "categories": [],
            "annotations": [{"image_id": 5, "bbox": [0, 0, 1, 1]}, {"image_id": 5, "bbox": [0, 0, 2, 2]},
                            {"image_id": 6, "bbox": [0, 0, 1, 1]}, {"image_id": 9, "bbox": [0, 0, 1, 1]}]}
    dets, how = instance.detections_from_json(data, {5, 6})
    assert [d["score"] for d in dets] == [1.0, 0.5, 1.0] and "rank" in how
    assert all(d["category_id"] == 1 for d in dets)
