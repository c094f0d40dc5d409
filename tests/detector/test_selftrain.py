"""Multi-round self-training labels (docs/method.md §7.2)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from u2seg.cli import main as cli_main
from u2seg.coco_format import decode_mask, instance_annotation
from u2seg.detector.selftrain import next_round_labels, round_threshold
from u2seg.errors import UserError


def _mask(x0, y0, x1, y1, h=50, w=60):
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def _pred(mask, score, cat):
    a = instance_annotation(mask, 0, 1, cat, score=score)
    return {k: a[k] for k in ("image_id", "category_id", "bbox", "score", "segmentation")}


def _inputs():
    previous = {"images": [{"id": 1, "width": 60, "height": 50, "file_name": "a.png"}],
                "annotations": [instance_annotation(_mask(0, 0, 20, 20), 1, 1, 2),  # IoU 0.81 with pred A
                                instance_annotation(_mask(40, 30, 60, 50), 2, 1, 1)],  # far from A
                "categories": [{"id": 1, "name": "cluster_0"}, {"id": 2, "name": "cluster_1"}, {"id": 3}]}
    preds = [_pred(_mask(0, 0, 20, 18), 0.9, 3),  # kept (>= 0.7)
             _pred(_mask(25, 0, 35, 10), 0.68, 1),  # below 0.7, kept at 0.65
             _pred(_mask(40, 30, 60, 50), 0.2, 2)]  # low score: not kept, so it does not remove old #2
    return preds, previous


def test_round_thresholds():
    assert round_threshold([0.7, 0.65], 2) == 0.7
    assert round_threshold([0.7, 0.65], 3) == 0.65
    assert round_threshold([0.7, 0.65], 5) == 0.65
    with pytest.raises(UserError):
        round_threshold([0.7], 1)


def test_union_of_confident_predictions_and_non_overlapping_old_masks():
    preds, previous = _inputs()
    merged, stats = next_round_labels(preds, previous, 0.7, 0.5, 30)
    assert stats == {"kept_predictions": 1, "kept_old": 1, "dropped_old": 1}
    cats = [a["category_id"] for a in merged["annotations"]]
    assert cats == [3, 1]
    assert [a["id"] for a in merged["annotations"]] == [1, 2]
    assert decode_mask(merged["annotations"][1]["segmentation"], 50, 60).sum() == 400
    assert merged["categories"] == previous["categories"]
    merged, stats = next_round_labels(preds, previous, 0.65, 0.5, 30)
    assert stats["kept_predictions"] == 2
    merged, stats = next_round_labels(preds, previous, 0.65, 0.5, 1)  # only the top prediction is considered
    assert stats["kept_predictions"] == 1


def test_cli(tmp_path):
    preds, previous = _inputs()
    (tmp_path / "p.json").write_text(json.dumps(preds))
    (tmp_path / "old.json").write_text(json.dumps(previous))
    out = tmp_path / "r2.json"
    assert cli_main(["self-train-labels", "--predictions", str(tmp_path / "p.json"), "--previous",
                     str(tmp_path / "old.json"), "--out", str(out), "--round", "3",
                     "--score-thresholds", "0.7", "0.65"]) == 0
    assert len(json.loads(out.read_text())["annotations"]) == 3  # 0.65 keeps 2 predictions + 1 old mask
