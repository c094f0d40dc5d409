"""Cluster -> class mappings: majority vote (U2Seg) vs strict one-to-one Hungarian."""
from __future__ import annotations

import numpy as np

from u2seg.evaluation import matching


def test_cluster_split_across_two_classes_majority_vs_hungarian():
    # cluster 0 is split between classes A (5 votes) and B (4); cluster 1 only saw A (3)
    votes = np.array([[5, 4], [3, 0], [0, 0]])
    assert matching.majority_assign(votes).tolist() == [0, 0, -1]  # many-to-one, empty row unmapped
    assert matching.hungarian_assign(votes).tolist() == [1, 0, -1]  # one-to-one, total 4 + 3 > 5
    # clusters the Hungarian rule leaves unmatched are charged to their most-overlapping class,
    # or to the most frequent class when they overlap nothing
    assert matching.fallback_classes(votes, np.array([1, 9])).tolist() == [0, 0, 1]


def test_hungarian_ignores_zero_overlap_pairs():
    votes = np.array([[0, 2, 0], [0, 1, 0]])
    assert matching.hungarian_assign(votes).tolist() == [1, -1]
    assert matching.mapping_dict(np.array([1, -1]), [7, 8], [10, 20, 30]) == {7: 20}


def _gt():
    return {"images": [{"id": 1, "height": 100, "width": 100}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 10, "bbox": [0, 0, 10, 10], "iscrowd": 0},
                            {"id": 2, "image_id": 1, "category_id": 20, "bbox": [50, 50, 20, 20], "iscrowd": 1}],
            "categories": [{"id": 10, "name": "a"}, {"id": 20, "name": "b"}]}


def test_instance_votes_thresholds_and_crowd():
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},  # IoU 1 with GT 1
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 8], "score": 0.9},  # IoU 0.8
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 7], "score": 0.9},  # IoU 0.7: not > 0.7
        {"image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 10], "score": 0.5},  # score too low
        {"image_id": 1, "category_id": 2, "bbox": [50, 50, 20, 20], "score": 0.7},  # on the crowd GT
    ]
    v = matching.instance_votes(dets, _gt(), [1, 2], [10, 20], 0.6, 0.7, "bbox", include_crowd=True)
    assert v.tolist() == [[2, 0], [0, 1]]
    v = matching.instance_votes(dets, _gt(), [1, 2], [10, 20], 0.6, 0.7, "bbox", include_crowd=False)
    assert v.tolist() == [[2, 0], [0, 0]]
    v = matching.instance_votes(dets, _gt(), [1, 2], [10, 20], 0.0, 0.5, "bbox", include_crowd=False)
    assert v.tolist() == [[3, 0], [1, 0]]


def test_instance_votes_with_mask_iou():
    from u2seg.coco_format import encode_mask

    gt = _gt()
    gt["annotations"][0]["segmentation"] = [[0, 0, 10, 0, 10, 10, 0, 10]]  # polygon GT
    gt["annotations"] = gt["annotations"][:1]
    half = np.zeros((100, 100), bool)
    half[:10, :6] = True  # mask IoU 0.6 with the 10x10 GT square, box the same
    dets = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "segmentation": encode_mask(half),
             "score": 1.0}]
    assert matching.instance_votes(dets, gt, [1], [10, 20], 0.0, 0.7, "bbox").tolist() == [[1, 0]]
    assert matching.instance_votes(dets, gt, [1], [10, 20], 0.0, 0.7, "segm").tolist() == [[0, 0]]
    assert matching.instance_votes(dets, gt, [1], [10, 20], 0.0, 0.5, "segm").tolist() == [[1, 0]]
