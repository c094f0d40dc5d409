"""Ground truth: things-only rasterisation (smaller on top, crowd as crowd, VOID elsewhere), class sets."""
from __future__ import annotations

import json

import numpy as np

from tests.conftest import COCO_PANOPTIC_SAMPLE, require_shared
from u2seg.coco_format import encode_mask
from u2seg.evaluation import gt as gtmod


def _ann(i, cat, mask, crowd=0):
    return {"id": i, "image_id": 1, "category_id": cat, "iscrowd": crowd, "segmentation": encode_mask(mask)}


def test_rasterise_smaller_on_top_crowd_below_and_void_elsewhere():
    big = np.zeros((6, 6), bool)
    big[:4, :4] = True
    small = np.zeros((6, 6), bool)
    small[1:3, 1:3] = True
    hidden = np.zeros((6, 6), bool)
    hidden[1:2, 1:2] = True  # smallest: painted last, on top of `small`
    crowd1 = np.zeros((6, 6), bool)
    crowd1[3:6, 3:6] = True
    crowd2 = np.zeros((6, 6), bool)
    crowd2[5, 0:2] = True
    anns = [_ann(10, 1, small), _ann(11, 1, big), _ann(12, 2, hidden), _ann(13, 1, crowd1, 1), _ann(14, 1, crowd2, 1)]
    ids, segs = gtmod.rasterise_instances(anns, 6, 6)
    by_id = {s["id"]: s for s in segs}
    # one crowd segment for category 1 (both crowd regions), under the instances
    crowd = [s for s in segs if s["iscrowd"]]
    assert len(crowd) == 1 and crowd[0]["category_id"] == 1
    assert ids[5, 0] == crowd[0]["id"] == ids[5, 5]
    assert ids[3, 3] != crowd[0]["id"]  # `big` covers the crowd overlap
    # the 1-px instance lies on top of `small`, which lies on top of `big`
    assert by_id[ids[1, 1]]["category_id"] == 2
    assert by_id[ids[2, 2]]["area"] == 3
    assert by_id[ids[0, 0]]["area"] == 16 - 4
    assert ids[0, 5] == 0 and ids[4, 0] == 0  # unlabelled -> VOID
    assert sum(s["area"] for s in segs) == int((ids > 0).sum())
    # fully hidden instances are dropped (equal areas: the larger annotation id lies on top)
    ids2, segs2 = gtmod.rasterise_instances([_ann(1, 1, small), _ann(2, 2, small.copy())], 6, 6)
    assert [s["category_id"] for s in segs2] == [2]


def test_semantic_class_sets_on_panoptic_categories():
    root = require_shared(COCO_PANOPTIC_SAMPLE) / "annotations"
    cats = [gtmod.Category(int(c["id"]), c["name"], bool(c["isthing"]), c["supercategory"])
            for c in json.loads((root / "panoptic_coco_categories.json").read_text())]
    lut27 = gtmod.semantic_lut(cats, "cocostuff27")
    lut16 = gtmod.semantic_lut(cats, "u2seg16")
    assert sorted(set(lut27.values())) == list(range(27))
    assert sorted(set(lut16.values())) == list(range(16))
    person = next(c.id for c in cats if c.name == "person")
    sky = next(c.id for c in cats if c.name == "sky-other-merged")
    assert gtmod.COCOSTUFF27_NAMES[lut27[person]] == "person" and lut16[person] == 0
    assert gtmod.U2SEG16_NAMES[lut16[sky]] == "sky" and gtmod.COCOSTUFF27_NAMES[lut27[sky]] == "sky"
    eval_cats, cat_map = gtmod.u2seg_panoptic_categories(cats)
    assert sum(c.isthing for c in eval_cats) == 80 and sum(not c.isthing for c in eval_cats) == 15
    assert cat_map[sky] == gtmod.STUFF_SUPERCATEGORY_ID_BASE + 1 + gtmod.U2SEG_STUFF_SUPERCATEGORIES.index("sky")


def test_semantic_gt_from_panoptic_image():
    root = require_shared(COCO_PANOPTIC_SAMPLE) / "annotations"
    data = json.loads((root / "panoptic_val2017.json").read_text())
    ids = [im["id"] for im in data["images"]]
    pgt = gtmod.load_panoptic(root / "panoptic_val2017.json", root / "panoptic_val2017", ids)
    pan, segs = gtmod.panoptic_image(pgt.sources[ids[0]])
    lut = gtmod.semantic_lut(pgt.categories, "u2seg16")
    sem = gtmod.semantic_gt(pan, segs, lut)
    assert sem.shape == pan.shape
    assert ((sem == gtmod.IGNORE) == (pan == 0)).all()  # only VOID is ignored
    thing_ids = [s["id"] for s in segs if lut[s["category_id"]] == 0]
    assert (sem[np.isin(pan, thing_ids)] == 0).all()
