"""Semantic metrics: confusion matrix, STEGO 27-class Hungarian, U2Seg 16-class votes."""
from __future__ import annotations

import numpy as np
import pytest

from u2seg.evaluation import gt as gtmod
from u2seg.evaluation import semantic

SKY = gtmod.COCOSTUFF27_SUPERCATEGORIES.index("sky")
WALL = gtmod.COCOSTUFF27_SUPERCATEGORIES.index("wall")
PERSON = gtmod.COCOSTUFF27_SUPERCATEGORIES.index("person")


def test_confusion_ignores_out_of_range():
    pred = np.array([[0, 1, 255], [1, 1, 2]])
    gt = np.array([[0, 1, 1], [255, 1, 0]])
    c = semantic.confusion(pred, gt, 3, 2)
    assert c.shape == (4, 3)
    assert c[0, 0] == 1 and c[1, 1] == 2 and c[3, 1] == 1 and c[1, 2] == 1 and c[2, 0] == 1
    assert c.sum() == 6


def test_stego27_perfect_and_hungarian():
    gt = np.array([[SKY, SKY, WALL, WALL, PERSON, PERSON]])
    pred = np.array([[3, 3, 5, 5, 0, 0]])
    res = semantic.stego27_metrics(semantic.confusion(pred, gt, 28, 27))
    assert res["pixel_acc"] == pytest.approx(100) and res["miou"] == pytest.approx(100)
    assert res["assignment"][3] == SKY and res["assignment"][0] == PERSON
    # label 3 covers sky and wall (one-to-one: one of them is wrong), label 5 unused
    pred = np.array([[3, 3, 3, 3, 0, 0]])
    res = semantic.stego27_metrics(semantic.confusion(pred, gt, 28, 27))
    assert res["pixel_acc"] == pytest.approx(100 * 4 / 6)
    # IoU sky (label 3) = 2 / 4, wall unmatched = 0, person = 1
    assert res["miou"] == pytest.approx(100 * (0.5 + 0 + 1) / 3)


def test_u2seg16_votes_and_unmapped_pixels_are_excluded():
    sky16 = gtmod.U2SEG16_NAMES.index("sky")
    wall16 = gtmod.U2SEG16_NAMES.index("wall")
    gt = np.array([[SKY] * 6 + [WALL] * 4 + [PERSON] * 2])
    # label 1 = sky (IoU 6/7), label 2 hits wall with IoU 1/4 (> 0.15), label 4 hits wall with IoU 0.1
    pred = np.array([[1] * 6 + [1, 2, 2, 2] + [0, 0]])
    conf = semantic.to_u2seg16(semantic.confusion(pred, gt, 28, 27))
    votes = semantic.u2seg_votes(conf, 0.15)
    assert votes[1, sky16] == 1 and votes[2, wall16] == 1 and votes[0].sum() == 0
    res = semantic.u2seg16_metrics(conf, votes)
    assert res["assignment"][1] == sky16 and res["assignment"][2] == wall16 and res["assignment"][0] == 0
    assert res["pixel_acc"] == pytest.approx(100 * 11 / 12)
    # a label without votes is unmapped: its pixels leave the totals
    pred = np.array([[1] * 6 + [4] * 4 + [0, 0]])
    conf = semantic.to_u2seg16(semantic.confusion(pred, gt, 28, 27))
    votes = semantic.u2seg_votes(conf, 0.5)
    votes[4] = 0
    res = semantic.u2seg16_metrics(conf, votes)
    assert res["pixel_acc"] == pytest.approx(100.0) and res["excluded_pixels"] == 4
    assert res["miou"] == pytest.approx(100.0)  # wall has no counted GT pixels -> not in the mean
    # STEGO (one-to-one) matches label 4 to wall instead
    assert semantic.stego27_metrics(semantic.confusion(pred, gt, 28, 27))["assignment"][4] == WALL


def test_split_label_many_to_one_vs_one_to_one():
    gt = np.array([[SKY] * 6 + [WALL] * 4 + [PERSON] * 2])
    pred = np.array([[1] * 4 + [4] * 2 + [2] * 4 + [0, 0]])  # sky split over labels 1 and 4
    conf27 = semantic.confusion(pred, gt, 28, 27)
    stego = semantic.stego27_metrics(conf27)
    assert stego["assignment"][4] == -1 and stego["pixel_acc"] == pytest.approx(100 * 10 / 12)
    conf16 = semantic.to_u2seg16(conf27)
    u2 = semantic.u2seg16_metrics(conf16, semantic.u2seg_votes(conf16, 0.15))
    assert u2["assignment"][4] == gtmod.U2SEG16_NAMES.index("sky") and u2["pixel_acc"] == pytest.approx(100.0)
