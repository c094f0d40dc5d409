"""``cityscapes/cups27`` / ``cups19`` against recorded outputs of CUPS's own metric (visinf/cups 78fc273
``PanopticQualitySemanticMatching``, torchmetrics 1.3.1) on synthetic cases, each isolating one rule:
(a) thing / stuff pseudo-classes matched separately, (b) leftover labels -> most-overlapping class,
(c) absent classes scored 0, (d) crowd regions as ordinary segments, (e) GT segments mostly predicted
VOID not missed, (f) stuff segments merged per class and image; plus two random mixed cases. Inputs and
outputs: tests/evaluation/data/cups_metric, written by ``benchmarks/cups_metric_reference.py`` (run by
hand with CUPS importable), for CUPS's default (``ADHERE_THING_STUFF`` on) and with it off (``_joint``).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from u2seg import atomic
from u2seg.coco_format import id2rgb
from u2seg.evaluation import cityscapes, cups_metric
from u2seg.evaluation.gt import load_panoptic

DATA = Path(__file__).parent / "data" / "cups_metric"
REF = json.loads((DATA / "reference.json").read_text())
ARRAYS = np.load(DATA / "inputs.npz")
# PQ / SQ: the same float32 IoUs as torchmetrics, summed and divided in float64 -> 1e-6 (x100 scale); RQ,
# PixelAcc, mIoU: CUPS divides (and averages) in float32 (relative 6e-8 -> up to ~1e-5 points here)
TOL_PQ, TOL_SEM = 1e-6, 2e-5


def _write(name: str, folder: Path):
    case = REF["cases"][name]
    anns, preds = [], {}
    for i, (gs, ps) in enumerate(zip(case["gt_segments"], case["pred_segments"])):
        g, p = ARRAYS[f"{name}/gt/{i}"], ARRAYS[f"{name}/pred/{i}"]
        atomic.save_png(folder / f"gt_{i}.png", id2rgb(g.astype(np.int64)))
        atomic.save_png(folder / f"pred_{i}.png", id2rgb(p.astype(np.int64)))
        anns.append({"image_id": i + 1, "file_name": f"gt_{i}.png", "segments_info": [
            {"id": s, "category_id": lab, "iscrowd": crowd, "area": int((g == s).sum())} for s, lab, crowd in gs]})
        preds[i + 1] = (str(folder / f"pred_{i}.png"), [{"id": s, "category_id": c} for s, c in ps])
    cats = [{"id": i, "name": n, "supercategory": c, "isthing": int(t)} for i, n, _, c, t in cityscapes.LABELS_27]
    atomic.write_json(folder / "gt.json", {"images": [{"id": i + 1, "file_name": f"{i}.png", "height": REF["height"],
                                                       "width": REF["width"]} for i in range(len(anns))],
                                           "annotations": anns, "categories": cats})
    pgt = load_panoptic(folder / "gt.json", folder, range(1, len(anns) + 1))
    return pgt, preds, [{"id": c, "isthing": t} for c, t in case["categories"]]


@pytest.mark.parametrize("name", sorted(REF["cases"]))
def test_cups_protocols_equal_cups_metric(name, tmp_path):
    pgt, preds, cats = _write(name, tmp_path)
    stuff = sorted(c["id"] for c in cats if not c["isthing"])
    order = stuff + sorted(c["id"] for c in cats if c["isthing"])  # CUPS's pseudo-class numbering
    for n in (27, 19):
        classes = cityscapes.class_set(n)
        for adhere in (True, False):
            ref = REF["cases"][name][f"cups{n}" + ("" if adhere else "_joint")]
            run = cityscapes.PROTOCOLS[f"cityscapes/cups{n}"] if adhere else cityscapes.cups(n, adhere_thing_stuff=False)
            out = run(pgt, preds, cats, {})
            where = f"{name} cups{n} adhere={adhere}"
            assert out["mapping"] == {str(k): classes[a].name for k, a in zip(order, ref["assignments"])}, where
            pan, sem = out["panoptic"], out["semantic"]
            for group, suffix in (("all", ""), ("things", "_things"), ("stuff", "_stuff")):
                for m in ("pq", "sq", "rq"):
                    tol = TOL_SEM if m == "rq" else TOL_PQ
                    assert pan[group][m] == pytest.approx(ref[m + suffix], abs=tol), (where, group, m)
            per_class = [pan["per_category"].get(c.name, {}).get("pq", 0.0) for c in classes]
            assert per_class == pytest.approx(ref["pq_per_class"], abs=TOL_PQ), where
            assert sem["miou"] == pytest.approx(ref["miou"], abs=TOL_SEM), where
            assert sem["pixel_acc"] == pytest.approx(ref["pixel_acc"], abs=TOL_SEM), where


def test_each_case_exercises_its_rule(tmp_path):
    """The isolating cases do differ from the stricter variant (else they would check nothing)."""
    for name in ("a_thing_stuff_separation", "b_leftover_labels", "c_absent_classes", "d_crowd",
                 "e_void_prediction", "f_split_stuff"):
        pgt, preds, cats = _write(name, tmp_path / name)
        for n in (27, 19):
            ref = REF["cases"][name][f"cups{n}"]
            strict = cityscapes.PROTOCOLS[f"cityscapes/cups{n}_strict"](pgt, preds, cats, {})
            if n == 27 or name in ("b_leftover_labels",):
                assert (abs(strict["panoptic"]["all"]["pq"] - ref["pq"]) > 0.1
                        or abs(strict["semantic"]["miou"] - ref["miou"]) > 0.1), (name, n)


def test_matching_rules():
    """Hungarian over the set, leftover labels -> most-overlapping class (first class without overlap);
    separated: thing labels only onto thing classes, stuff labels only onto stuff classes."""
    cost = np.array([[5, 0, 0], [0, 4, 1], [0, 3, 2], [0, 0, 0], [2, 0, 1]])
    assert cups_metric.assign(cost).tolist() == [0, 1, 2, 0, 0]
    sep = cups_metric.assign_separated(cost, np.array([True, False, False, False, False]), np.array([True, False, False]))
    assert sep.tolist() == [0, 1, 2, 1, 2]
    assert cups_metric.assign(np.zeros((2, 0))).tolist() == [-1, -1]


def test_workers_and_broken_predictions(tmp_path):
    name = "mixed_1"
    pgt, preds, cats = _write(name, tmp_path)
    one = cityscapes.PROTOCOLS["cityscapes/cups27"](pgt, preds, cats, {})
    two = cityscapes.PROTOCOLS["cityscapes/cups27"](pgt, preds, cats, {}, workers=2)
    assert one == two
    from u2seg.errors import UserError

    png, segs = preds[1]
    with pytest.raises(UserError, match="not in segments_info"):
        cityscapes.PROTOCOLS["cityscapes/cups27"](pgt, {**preds, 1: (png, segs[1:])}, cats, {})
    with pytest.raises(UserError, match="category_id"):
        cityscapes.PROTOCOLS["cityscapes/cups27"](pgt, preds, cats[1:], {})
