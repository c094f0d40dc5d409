"""Evaluation numbers exactly as the reference tools compute them.

* PQ with several crowd segments of one category: panopticapi keeps only the LAST one listed
  (``crowd_labels_dict[category] = id`` overwritten while iterating segments_info); the summed
  variant is the named option ``crowd_rule="sum"``.
* An unknown predicted category id raises (panopticapi raises KeyError).
* ``stego27`` follows STEGO's ``UnsupervisedMetrics`` (one zero-IoU entry for the unmatched clusters,
  IoU 0 for absent classes whose assigned label predicts pixels); STEGO's mask of labels >= 27 is
  checked as the ``stego_mask`` option, the pipeline's maps (0 = thing, 1..27 = stuff) score label 27.
"""
from __future__ import annotations

import numpy as np
import pytest

from u2seg import atomic
from u2seg.coco_format import id2rgb
from u2seg.errors import UserError
from u2seg.evaluation import gt as gtmod
from u2seg.evaluation import semantic
from u2seg.evaluation.panoptic import pq_compute, pq_image

N_CAT = 3


def _stats(gt_ids, gt_segs, pred_ids, pred_segs, crowd_rule="last"):
    gt_ids, pred_ids = np.asarray(gt_ids), np.asarray(pred_ids)
    return pq_image(gt_ids, [s[0] for s in gt_segs], [s[1] for s in gt_segs], [s[2] for s in gt_segs],
                    [int((gt_ids == s[0]).sum()) for s in gt_segs], pred_ids, [s[0] for s in pred_segs],
                    [s[1] for s in pred_segs], N_CAT, crowd_rule=crowd_rule)


def _panopticapi_rule(gt_ids, gt_segs, pred_ids, pred_segs):
    """TP / FP / FN per category following panopticapi's pq_compute_single_core step by step
    (dicts in listing order; the crowd region of a category is the last crowd segment listed)."""
    gt = {s[0]: {"cat": s[1], "crowd": s[2], "area": int((gt_ids == s[0]).sum())} for s in gt_segs}
    pred = {s[0]: {"cat": s[1], "area": int((pred_ids == s[0]).sum())} for s in pred_segs}
    pairs: dict[tuple[int, int], int] = {}
    for g, p in zip(gt_ids.ravel().tolist(), pred_ids.ravel().tolist()):
        pairs[(g, p)] = pairs.get((g, p), 0) + 1
    tp, fp, fn = np.zeros(N_CAT, int), np.zeros(N_CAT, int), np.zeros(N_CAT, int)
    iou_sum = np.zeros(N_CAT)
    gm, pm = set(), set()
    for (g, p), inter in pairs.items():
        if g not in gt or p not in pred or gt[g]["crowd"] or gt[g]["cat"] != pred[p]["cat"]:
            continue
        iou = inter / (pred[p]["area"] + gt[g]["area"] - inter - pairs.get((0, p), 0))
        if iou > 0.5:
            tp[gt[g]["cat"]] += 1
            iou_sum[gt[g]["cat"]] += iou
            gm.add(g)
            pm.add(p)
    crowd_of = {}
    for g, info in gt.items():
        if g in gm:
            continue
        if info["crowd"]:
            crowd_of[info["cat"]] = g
            continue
        fn[info["cat"]] += 1
    for p, info in pred.items():
        if p in pm:
            continue
        inter = pairs.get((0, p), 0)
        if info["cat"] in crowd_of:
            inter += pairs.get((crowd_of[info["cat"]], p), 0)
        if inter / info["area"] > 0.5:
            continue
        fp[info["cat"]] += 1
    return tp, fp, fn, iou_sum


def test_two_crowd_segments_of_one_category_use_the_last_listed():
    # crowd segments 9 and 10 of category 0; prediction 5 (category 0) lies on crowd 9 only
    gt = np.array([[9, 9, 9, 9, 10, 10, 1, 1]])
    pred = np.array([[5, 5, 5, 0, 0, 0, 7, 7]])
    segs = [(9, 0, True), (10, 0, True), (1, 0, False)]
    last = _stats(gt, segs, pred, [(5, 0), (7, 0)])
    assert last.fp.tolist() == [1, 0, 0]  # 9 is not the last crowd of category 0: 5 is a false positive
    summed = _stats(gt, segs, pred, [(5, 0), (7, 0)], crowd_rule="sum")
    assert summed.fp.tolist() == [0, 0, 0]
    # the listing order decides: with 9 listed last, 5 lies on "the" crowd region and is ignored
    swapped = _stats(gt, [(10, 0, True), (9, 0, True), (1, 0, False)], pred, [(5, 0), (7, 0)])
    assert swapped.fp.tolist() == [0, 0, 0]
    assert last.tp.tolist() == summed.tp.tolist() == [1, 0, 0]
    with pytest.raises(UserError, match="crowd_rule"):
        _stats(gt, segs, pred, [(5, 0), (7, 0)], crowd_rule="union")


def test_pq_equals_panopticapi_rule_on_random_multi_crowd_images():
    rng = np.random.default_rng(0)
    differ = 0
    for _ in range(200):
        n_gt = int(rng.integers(2, 6))
        gt_segs = [(i + 1, int(rng.integers(0, N_CAT)), bool(rng.random() < 0.5)) for i in range(n_gt)]
        gt_ids = rng.choice(np.arange(n_gt + 1), size=(6, 6))  # 0 = VOID
        gt_segs = [s for s in gt_segs if (gt_ids == s[0]).any()]
        n_p = int(rng.integers(1, 6))
        pred_ids = rng.choice(np.arange(n_p + 1) * 3, size=(6, 6))
        pred_segs = [(int(p), int(rng.integers(0, N_CAT))) for p in np.unique(pred_ids) if p]
        ref = _panopticapi_rule(gt_ids, gt_segs, pred_ids, pred_segs)
        got = _stats(gt_ids, gt_segs, pred_ids, pred_segs)
        assert got.tp.tolist() == ref[0].tolist() and got.fp.tolist() == ref[1].tolist()
        assert got.fn.tolist() == ref[2].tolist() and np.allclose(got.iou, ref[3])
        differ += _stats(gt_ids, gt_segs, pred_ids, pred_segs, "sum").fp.tolist() != ref[1].tolist()
    assert differ > 0  # the cases exercise the rule: the summed variant differs on some of them


def test_unknown_predicted_category_raises(tmp_path):
    gt_png = tmp_path / "gt.png"
    atomic.save_png(gt_png, id2rgb(np.array([[1, 1], [2, 2]])))
    gt_sources = {7: ("png", str(gt_png), [{"id": 1, "category_id": 1, "iscrowd": 0, "area": 2},
                                          {"id": 2, "category_id": 3, "iscrowd": 0, "area": 2}])}
    cats = [gtmod.Category(1, "a", True, "person"), gtmod.Category(3, "s", False, "sky")]
    pred_png = tmp_path / "pred.png"
    atomic.save_png(pred_png, id2rgb(np.array([[4, 4], [5, 5]])))
    ok = pq_compute(gt_sources, {7: (str(pred_png), [{"id": 4, "category_id": 1}, {"id": 5, "category_id": 3}])},
                    cats)
    assert ok["all"]["pq"] == pytest.approx(100.0)
    with pytest.raises(UserError, match=r"unknown category_id \[99\]"):
        pq_compute(gt_sources, {7: (str(pred_png), [{"id": 4, "category_id": 1}, {"id": 5, "category_id": 99}])},
                   cats)
    # with a cluster map: a listed cluster without a class is VOID (U2Seg), an unlisted id raises
    segs = [{"id": 4, "category_id": 11}, {"id": 5, "category_id": 12}]
    res = pq_compute(gt_sources, {7: (str(pred_png), segs)}, cats, pred_cat_map={11: 1},
                     pred_categories=[11, 12])
    assert res["per_category"]["a"]["tp"] == 1 and res["per_category"]["s"]["fn"] == 1
    with pytest.raises(UserError, match="unknown category_id"):
        pq_compute(gt_sources, {7: (str(pred_png), segs)}, cats, pred_cat_map={11: 1}, pred_categories=[11])


SKY = gtmod.COCOSTUFF27_SUPERCATEGORIES.index("sky")
WALL = gtmod.COCOSTUFF27_SUPERCATEGORIES.index("wall")
PERSON = gtmod.COCOSTUFF27_SUPERCATEGORIES.index("person")


@pytest.mark.parametrize("odd_label,miou", [(3, 59.375), (4, 47.5)])
def test_stego27_is_stegos_unsupervised_metrics_with_28_labels_and_absent_classes(odd_label, miou):
    # 24 of the 27 classes absent; labels 0 (person), 1 (sky), 2 (wall), 27 (dropped) and a label that
    # overlaps sky and person but is beaten there by labels 1 and 0, so it is assigned an absent class.
    gt = np.array([[SKY] * 8 + [WALL] * 6 + [PERSON] * 4 + [255] * 2])
    pred = np.array([[1] * 5 + [3] * 3 + [2] * 4 + [27] * 2 + [0] * 3 + [odd_label] + [1, 27]])
    conf = semantic.confusion(pred, gt, 28, 27)
    res = semantic.stego_unsupervised_metrics(conf, stego_mask=True)
    # STEGO drops the 2 GT pixels of label 27: 16 counted; matched diagonal 5 + 4 + 3
    assert res["dropped_pixels"] == 2 and res["pixels"] == 16 and res["extra_clusters"] == 1
    assert res["pixel_acc"] == pytest.approx(100 * 12 / 16)
    # sky 5 / 8, wall 4 / 4, person 3 / 4, and IoU 0 for every absent class whose label predicts
    # pixels (label 3: one class; labels 3 and 4: two) -> the values STEGO eb4d6b5's
    # UnsupervisedMetrics(27, extra_clusters=1) returns on these maps (59.375 and 47.49999940 in float32)
    assert res["per_class_iou"]["sky"] == pytest.approx(62.5) and res["per_class_iou"]["wall"] == 100.0
    assert res["per_class_iou"]["person"] == pytest.approx(75.0)
    zeros = [k for k, v in res["per_class_iou"].items() if k not in ("sky", "wall", "person")]
    assert all(res["per_class_iou"][k] == 0.0 for k in zeros) and len(zeros) == (1 if odd_label == 3 else 2)
    assert res["miou"] == pytest.approx(miou)
    # the strict variant counts label 27 as errors and leaves absent classes out of the mean
    strict = semantic.stego27_metrics(conf)
    assert strict["pixels"] == 18 and strict["pixel_acc"] == pytest.approx(100 * 12 / 18)
    assert strict["miou"] == pytest.approx((62.5 + 100 * 4 / 6 + 75) / 3)


def test_stego27_scores_the_last_stuff_cluster_of_the_pipelines_maps():
    # 0 = thing, 1..27 = stuff clusters: label 27 is a real cluster; its pixels are counted and it can
    # be matched (here it is the only label on wall, so the Hungarian gives it wall)
    gt = np.array([[SKY] * 6 + [WALL] * 4 + [PERSON] * 3 + [255]])
    pred = np.array([[1] * 5 + [2] + [27] * 4 + [0] * 3 + [27]])
    conf = semantic.confusion(pred, gt, 28, 27)
    res = semantic.stego_unsupervised_metrics(conf)
    assert res["dropped_pixels"] == 0 and res["pixels"] == 13 and res["extra_clusters"] == 1
    assert res["assignment"][27] == WALL and res["per_class_iou"]["wall"] == 100.0
    assert res["pixel_acc"] == pytest.approx(100 * 12 / 13)
    # STEGO's literal mask loses the cluster: wall pixels count as unmatched, label 27 unassigned
    literal = semantic.stego_unsupervised_metrics(conf, stego_mask=True)
    assert literal["dropped_pixels"] == 4 and literal["pixels"] == 9 and literal["assignment"][27] != WALL


def test_stego27_without_extra_clusters_keeps_every_label_below_27():
    gt = np.array([[SKY] * 4 + [WALL] * 4])
    pred = np.array([[1, 1, 1, 1, 2, 2, 2, 30]])  # 27 labels: 30 is outside, dropped like STEGO's mask
    res = semantic.stego_unsupervised_metrics(semantic.confusion(pred, gt, 27, 27))
    assert res["extra_clusters"] == 0 and res["pixels"] == 7 and res["pixel_acc"] == pytest.approx(100.0)
    assert res["miou"] == pytest.approx(100.0) and res["assignment"][1] == SKY and res["assignment"][2] == WALL


def test_sample_ground_truth_with_a_crowd_split_in_two(tmp_path):
    """The COCO panoptic sample's person crowd (image 142238) split into two crowd segments, the
    larger listed first; the unmodified GT as the prediction (the crowd area predicted as one person
    segment). panopticapi counts only the last crowd segment: that segment is a false positive."""
    import json

    from tests.conftest import COCO_PANOPTIC_SAMPLE, require_shared

    root = require_shared(COCO_PANOPTIC_SAMPLE) / "annotations"
    data = json.loads((root / "panoptic_val2017.json").read_text())
    ids_all = [int(im["id"]) for im in data["images"]]
    pgt = gtmod.load_panoptic(root / "panoptic_val2017.json", root / "panoptic_val2017", ids_all)
    ids, segs = gtmod.panoptic_image(pgt.sources[142238])
    crowd = next(s for s in segs if s["iscrowd"] and s["category_id"] == 1)
    ys, xs = np.nonzero(ids == crowd["id"])
    cut = np.quantile(xs, 0.7)  # 70 % of the crowd keeps its id, 30 % (listed last) gets a new one
    split = ids.copy()
    split[ys[xs > cut], xs[xs > cut]] = 999
    small = int((split == 999).sum())
    gt_segs = [dict(s, area=s["area"] - small) if s is crowd else dict(s) for s in segs]
    gt_segs.append(dict(crowd, id=999, area=small))
    atomic.save_png(tmp_path / "gt.png", id2rgb(split))
    sources = {142238: ("png", str(tmp_path / "gt.png"), gt_segs)}
    atomic.save_png(tmp_path / "pred.png", id2rgb(ids))
    preds = {142238: (str(tmp_path / "pred.png"), [{"id": s["id"], "category_id": s["category_id"]} for s in segs])}
    last = pq_compute(sources, preds, pgt.categories)
    summed = pq_compute(sources, preds, pgt.categories, crowd_rule="sum")
    assert summed["all"]["pq"] == pytest.approx(100.0)
    assert last["per_category"]["person"]["fp"] == 1 and last["all"]["pq"] < 100.0
    # unsplit, both rules agree: the crowd region excuses the prediction
    assert pq_compute({142238: pgt.sources[142238]}, preds, pgt.categories)["all"]["pq"] == pytest.approx(100.0)
