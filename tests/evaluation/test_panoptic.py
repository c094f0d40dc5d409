"""PQ / SQ / RQ: hand-computed cases and the COCO panoptic sample (panopticapi's definition)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import COCO_PANOPTIC_SAMPLE, require_shared
from u2seg import atomic
from u2seg.coco_format import id2rgb
from u2seg.errors import UserError
from u2seg.evaluation import gt as gtmod
from u2seg.evaluation.panoptic import pq_compute, pq_image, summarize

THING = gtmod.Category(1, "a", True, "person")
THING_B = gtmod.Category(2, "b", True, "animal")
STUFF = gtmod.Category(3, "s", False, "sky")
CATS = [THING, THING_B, STUFF]


def _pq(gt_ids, gt_segs, pred_ids, pred_segs, forced=None, group=None):
    """gt_segs: [(id, cat index, crowd)], areas from the map; pred_segs: [(id, cat index)]."""
    gt_ids, pred_ids = np.asarray(gt_ids), np.asarray(pred_ids)
    stats = pq_image(
        gt_ids, [s[0] for s in gt_segs], [s[1] for s in gt_segs], [s[2] for s in gt_segs],
        [int((gt_ids == s[0]).sum()) for s in gt_segs], pred_ids, [s[0] for s in pred_segs],
        [s[1] for s in pred_segs], len(CATS), forced, group)
    return stats, summarize(stats, CATS)


def test_perfect_prediction_is_100():
    gt = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 3, 3]])
    pred = gt * 7  # different ids, same segments
    stats, res = _pq(gt, [(1, 0, False), (2, 1, False), (3, 2, False)], pred, [(7, 0), (14, 1), (21, 2)])
    assert res["all"] == {"pq": 100.0, "sq": 100.0, "rq": 100.0, "n": 3}
    assert res["things"]["n"] == 2 and res["stuff"]["n"] == 1
    assert stats.tp.tolist() == [1, 1, 1] and stats.fp.sum() == 0 and stats.fn.sum() == 0


def test_one_missed_segment():
    gt = np.array([[1, 1, 0, 2, 2]])
    pred = np.array([[5, 5, 0, 0, 0]])
    stats, res = _pq(gt, [(1, 0, False), (2, 0, False)], pred, [(5, 0)])
    # category a: TP 1 (IoU 1), FN 1 -> PQ = 1 / (1 + 0.5), SQ = 1, RQ = 2/3
    assert (stats.tp[0], stats.fn[0], stats.fp[0]) == (1, 1, 0)
    assert res["all"]["pq"] == pytest.approx(100 / 1.5)
    assert res["all"]["sq"] == pytest.approx(100.0)
    assert res["all"]["rq"] == pytest.approx(100 / 1.5)


def test_iou_must_exceed_half_and_categories_must_agree():
    gt = np.array([[1, 1, 1, 1, 0, 0]])
    pred = np.array([[5, 5, 6, 6, 6, 6]])  # seg 5: IoU 2/4 = 0.5 exactly -> not a match
    stats, _ = _pq(gt, [(1, 0, False)], pred, [(5, 0), (6, 1)])
    assert stats.tp.sum() == 0 and stats.fn[0] == 1
    # seg 5 (2 px, none on void) is an FP of a; seg 6 has 2 of 4 px on void (not > 0.5) -> FP of b
    assert stats.fp.tolist() == [1, 1, 0]


def test_void_pixels_leave_iou_and_do_not_make_false_positives():
    gt = np.array([[1, 1, 1, 1, 0, 0, 0, 0, 0]])
    pred = np.array([[5, 5, 5, 5, 5, 5, 6, 6, 6]])
    stats, res = _pq(gt, [(1, 0, False)], pred, [(5, 0), (6, 2)])
    # seg 5: |p| = 6, |g| = 4, inter 4, 2 px on void -> IoU = 4 / (6 + 4 - 4 - 2) = 1
    assert stats.tp[0] == 1 and stats.iou[0] == pytest.approx(1.0)
    # seg 6 lies fully on void: not a false positive, and category s has nothing -> skipped
    assert stats.fp.sum() == 0 and res["all"]["n"] == 1 and res["stuff"]["n"] == 0


def test_crowd_regions():
    # crowd of a (id 9) covers 6 px; a non-crowd GT of a (id 1) 2 px
    gt = np.array([[9, 9, 9, 9, 9, 9, 1, 1]])
    pred = np.array([[5, 5, 5, 5, 6, 6, 7, 7]])
    stats, _ = _pq(gt, [(9, 0, True), (1, 0, False)], pred, [(5, 0), (6, 1), (7, 0)])
    # seg 7 matches GT 1; seg 5 (cat a) lies on a's crowd -> ignored; seg 6 (cat b) on a's crowd -> FP
    # of b; the crowd segment itself is never a false negative
    assert stats.tp.tolist() == [1, 0, 0]
    assert stats.fp.tolist() == [0, 1, 0]
    assert stats.fn.sum() == 0


def test_unmapped_segments_are_void_and_forced_false_positives_never_match():
    gt = np.array([[1, 1, 2, 2]])
    pred = np.array([[5, 5, 6, 6]])
    stats, _ = _pq(gt, [(1, 0, False), (2, 1, False)], pred, [(5, -1), (6, 1)])
    assert stats.tp.tolist() == [0, 1, 0] and stats.fn.tolist() == [1, 0, 0] and stats.fp.sum() == 0
    stats, _ = _pq(gt, [(1, 0, False), (2, 1, False)], pred, [(5, 0), (6, 1)], forced=[True, False])
    assert stats.tp.tolist() == [0, 1, 0] and stats.fn.tolist() == [1, 0, 0] and stats.fp.tolist() == [1, 0, 0]


def test_merged_stuff_groups():
    gt = np.array([[3, 3, 4, 4, 4, 4]])
    pred = np.full((1, 6), 8)
    # separate GT segments of s: best IoU 4/6 -> TP; the 2-px one is an FN
    stats, _ = _pq(gt, [(3, 2, False), (4, 2, False)], pred, [(8, 2)])
    assert (stats.tp[2], stats.fn[2], stats.fp[2]) == (1, 1, 0)
    stats, _ = _pq(gt, [(3, 2, False), (4, 2, False)], pred, [(8, 2)], group=[0, 0])
    assert (stats.tp[2], stats.fn[2], stats.fp[2]) == (1, 0, 0) and stats.iou[2] == pytest.approx(1.0)


def test_prediction_consistency_errors():
    gt = np.array([[1, 1]])
    with pytest.raises(UserError, match="not in segments_info"):
        _pq(gt, [(1, 0, False)], np.array([[5, 6]]), [(5, 0)])
    with pytest.raises(UserError, match="no pixels"):
        _pq(gt, [(1, 0, False)], np.array([[5, 5]]), [(5, 0), (6, 0)])
    with pytest.raises(UserError, match="size"):
        _pq(gt, [(1, 0, False)], np.array([[5, 5, 5]]), [(5, 0)])


# ---------------------------------------------------------------------- COCO panoptic sample
def _sample():
    root = require_shared(COCO_PANOPTIC_SAMPLE) / "annotations"
    data = json.loads((root / "panoptic_val2017.json").read_text())
    ids = [int(im["id"]) for im in data["images"]]
    pgt = gtmod.load_panoptic(root / "panoptic_val2017.json", root / "panoptic_val2017", ids)
    return data, pgt


def _write_pred(tmp_path, name, ids, segments):
    path = tmp_path / name
    atomic.save_png(path, id2rgb(ids))
    return str(path), segments


def _expected(per_cat):
    """Mean PQ / SQ / RQ (x100) over categories from {cat: (tp, fp, fn, iou_sum)}."""
    vals = []
    for tp, fp, fn, iou in per_cat.values():
        if tp + fp + fn:
            d = tp + fp / 2 + fn / 2
            vals.append((iou / d, iou / tp if tp else 0.0, tp / d))
    return [100 * float(np.mean([v[i] for v in vals])) for i in range(3)]


def _gt_counts(data):
    """{cat: [tp, fp, fn, iou]} of a perfect prediction: every non-crowd GT segment is a TP."""
    counts: dict[int, list] = {}
    for ann in data["annotations"]:
        for s in ann["segments_info"]:
            if not s["iscrowd"]:
                c = counts.setdefault(s["category_id"], [0, 0, 0, 0.0])
                c[0] += 1
                c[3] += 1.0
    return counts


def test_sample_ground_truth_as_prediction_is_100(tmp_path):
    data, pgt = _sample()
    preds = {}
    for ann in data["annotations"]:
        ids, segs = gtmod.panoptic_image(pgt.sources[ann["image_id"]])
        preds[ann["image_id"]] = _write_pred(tmp_path, ann["file_name"], ids, segs)
    for workers in (1, 2):
        res = pq_compute(pgt.sources, preds, pgt.categories, workers=workers)
        assert res["all"]["pq"] == pytest.approx(100.0) and res["all"]["sq"] == pytest.approx(100.0)
        assert res["all"]["n"] == len(_gt_counts(data))
        assert res["things"]["n"] + res["stuff"]["n"] == res["all"]["n"] and res["stuff"]["n"] > 0


def test_sample_perturbed_predictions(tmp_path):
    data, pgt = _sample()
    counts = _gt_counts(data)
    preds = {}
    for ann in data["annotations"]:
        ids, segs = gtmod.panoptic_image(pgt.sources[ann["image_id"]])
        segs = [dict(s) for s in segs]
        if ann["image_id"] == 142238:
            # 1) drop the largest non-crowd person (paint it VOID): one FN of person
            person = max((s for s in segs if s["category_id"] == 1 and not s["iscrowd"]), key=lambda s: s["area"])
            ids = np.where(ids == person["id"], 0, ids)
            segs.remove(person)
            counts[1][0] -= 1
            counts[1][2] += 1
            counts[1][3] -= 1.0
            # 2) merge the two smallest non-crowd persons into the larger one's id
            small = sorted((s for s in segs if s["category_id"] == 1 and not s["iscrowd"]), key=lambda s: s["area"])[:2]
            lo, hi = small
            ids = np.where(ids == lo["id"], hi["id"], ids)
            segs.remove(lo)
            # hi now has area lo+hi: IoU with GT hi = hi / (lo + hi) > 0.5 -> TP; GT lo -> FN
            counts[1][0] -= 1
            counts[1][2] += 1
            counts[1][3] += hi["area"] / (lo["area"] + hi["area"]) - 2.0
        else:
            # 3) relabel the sky-like stuff segment 187 to 184: FN of 187, FP of 184
            seg = next(s for s in segs if s["category_id"] == 187)
            seg["category_id"] = 184
            counts[187][0] -= 1
            counts[187][2] += 1
            counts[187][3] -= 1.0
            counts[184][1] += 1
        preds[ann["image_id"]] = _write_pred(tmp_path, ann["file_name"], ids, segs)
    res = pq_compute(pgt.sources, preds, pgt.categories, workers=1)
    pq, sq, rq = _expected({c: tuple(v) for c, v in counts.items()})
    assert res["all"]["pq"] == pytest.approx(pq) and res["all"]["sq"] == pytest.approx(sq)
    assert res["all"]["rq"] == pytest.approx(rq)
    assert res["all"]["pq"] < 100
    person = res["per_category"]["person"]
    assert (person["tp"], person["fn"], person["fp"]) == (counts[1][0], counts[1][2], 0)
    # missing predictions count as empty predictions: every non-crowd GT segment becomes an FN
    empty = pq_compute(pgt.sources, {}, pgt.categories)
    assert empty["all"]["pq"] == 0.0 and empty["images_without_prediction"] == 2
