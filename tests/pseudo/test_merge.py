"""Panoptic merge rules (docs/method.md §6) on hand-made cases."""
from __future__ import annotations

import numpy as np
import pytest

from u2seg.pseudo.panoptic.merge import VOID, merge_panoptic, paint_order, panoptic_categories

K, S = 5, 3


def box(h: int, w: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def seg_by_cat(res, cat):
    return [s for s in res.segments if s["category_id"] == cat]


def test_nesting_small_instance_painted_on_top():
    stuff = np.zeros((10, 20), dtype=np.uint8)
    big = box(10, 20, 0, 0, 10, 12)  # box area 120
    small = box(10, 20, 2, 2, 5, 6)  # box area 12, inside big
    # input order small, big: painting must still put small on top
    res = merge_panoptic([small, big], [2, 4], stuff, K, S, 0.7, first_id=1)
    assert paint_order([small, big]) == [1, 0]
    (s_small,), (s_big,) = seg_by_cat(res, 2), seg_by_cat(res, 4)
    assert s_small["area"] == 12 and s_small["bbox"] == [2, 2, 4, 3]
    assert s_big["area"] == 120 - 12 and s_big["bbox"] == [0, 0, 12, 10]
    assert np.all(res.pan[2:5, 2:6] == s_small["id"])
    assert res.hidden == 0


def test_full_occlusion_drops_hidden_instance():
    stuff = np.zeros((8, 8), dtype=np.uint8)
    a = box(8, 8, 0, 0, 4, 4)  # box area 16, later fully covered by b of the same box area
    b = box(8, 8, 0, 0, 4, 4)
    c = box(8, 8, 0, 0, 8, 8)  # area 64, fully covered? no: it keeps the rest
    res = merge_panoptic([a, b, c], [1, 2, 3], stuff, K, S, 0.7)
    cats = sorted(s["category_id"] for s in res.segments if s["category_id"] <= K)
    assert cats == [2, 3]  # a (tie, painted first) is hidden by b
    assert res.hidden == 1
    assert len(res.thing_source) == 2 and sorted(res.thing_source.values()) == [1, 2]


def test_stuff_overlap_rule_threshold():
    h, w = 10, 10
    stuff = np.zeros((h, w), dtype=np.uint8)  # cluster 0 everywhere (100 px)
    stuff[:, 5:] = 1  # cluster 1: right half (50 px); cluster 0: left half (50 px)
    # a thing covering 36 of cluster 0's 50 px (0.72 > 0.7) and 34 of cluster 1's 50 px (0.68)
    thing = np.zeros((h, w), dtype=bool)
    thing[:6, :5] = True
    thing[6, :5] = True
    thing[7, :1] = True  # 36 px of cluster 0
    thing[:6, 5:10] = True
    thing[6, 5:9] = True  # 34 px of cluster 1
    assert thing[:, :5].sum() == 36 and thing[:, 5:].sum() == 34
    res = merge_panoptic([thing], [1], stuff, K, S, 0.7)
    assert seg_by_cat(res, K + 1) == []  # cluster 0 dropped: 0.72 covered
    (s1,) = seg_by_cat(res, K + 2)  # cluster 1 kept: 0.68 covered
    assert s1["area"] == 50 - 34
    assert res.stuff_dropped == 1
    # the free part of the dropped cluster is void in both outputs
    free0 = (stuff == 0) & ~thing
    assert np.all(res.pan[free0] == 0) and np.all(res.semantic[free0] == VOID)
    assert np.all(res.semantic[(stuff == 1) & ~thing] == 2)
    assert np.all(res.semantic[thing] == 0)
    # at exactly 0.7 the cluster is kept (the rule is "> 0.7")
    res_eq = merge_panoptic([thing], [1], stuff, K, S, 36 / 50)
    assert len(seg_by_cat(res_eq, K + 1)) == 1


def test_void_and_disconnected_stuff_is_one_segment():
    stuff = np.full((6, 9), 255, dtype=np.uint8)  # unlabelled = void
    stuff[:, :2] = 2
    stuff[:, 7:] = 2  # two disconnected pieces of cluster 2
    res = merge_panoptic([], [], stuff, K, S, 0.7, first_id=40)
    assert len(res.segments) == 1
    seg = res.segments[0]
    assert seg == {"id": 40, "category_id": K + 3, "iscrowd": 0, "area": 24, "bbox": [0, 0, 9, 6]}
    assert np.all(res.pan[:, 2:7] == 0) and np.all(res.semantic[:, 2:7] == VOID)
    assert np.all(res.semantic[stuff == 2] == 3)


def test_ids_unique_consecutive_and_match_pixels():
    rng = np.random.default_rng(0)
    h, w = 30, 40
    stuff = rng.integers(0, S, size=(h, w)).astype(np.uint8)
    masks = [box(h, w, *rng.integers(0, 15, 2), *rng.integers(15, 30, 2)) for _ in range(6)]
    res = merge_panoptic(masks, [1 + i % K for i in range(6)], stuff, K, S, 0.7, first_id=7)
    ids = [s["id"] for s in res.segments]
    assert ids == list(range(7, 7 + len(ids)))
    assert set(np.unique(res.pan)) - {0} == set(ids)
    for s in res.segments:
        m = res.pan == s["id"]
        ys, xs = np.nonzero(m)
        assert s["area"] == m.sum()
        assert s["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def test_bad_inputs_raise():
    stuff = np.zeros((4, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match="shape"):
        merge_panoptic([np.zeros((4, 5), bool)], [1], stuff, K, S)
    with pytest.raises(ValueError, match="category"):
        merge_panoptic([np.ones((4, 4), bool)], [K + 1], stuff, K, S)


def test_categories_layout():
    cats = panoptic_categories(3, 2)
    assert [c["id"] for c in cats] == [1, 2, 3, 4, 5]
    assert [c["isthing"] for c in cats] == [1, 1, 1, 0, 0]
    assert cats[0]["name"] == "cluster_001" and cats[3]["name"] == "stuff_001"
