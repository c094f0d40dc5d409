"""Few-shot subset split: deterministic per seed, proper fraction, coverage reported."""
from __future__ import annotations

import json

import pytest

from tests.conftest import COCO_MINI, require_shared
from u2seg.errors import UserError
from u2seg.finetune.split import coverage, labelled_subset


def _toy(n_images: int = 20) -> dict:
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 10, "height": 10} for i in range(1, n_images + 1)]
    anns = []
    for i in range(1, n_images + 1):
        anns.append({"id": 2 * i, "image_id": i, "category_id": 1 + i % 3, "iscrowd": 0, "bbox": [0, 0, 1, 1]})
    anns.append({"id": 999, "image_id": 1, "category_id": 1, "iscrowd": 1, "bbox": [0, 0, 1, 1]})
    images.append({"id": 500, "file_name": "crowd_only.jpg", "width": 10, "height": 10})
    anns.append({"id": 1000, "image_id": 500, "category_id": 2, "iscrowd": 1, "bbox": [0, 0, 1, 1]})
    cats = [{"id": c, "name": f"c{c}"} for c in (1, 2, 3, 4)]
    return {"images": images, "annotations": anns, "categories": cats}


def test_deterministic_per_seed_and_different_across_seeds():
    coco = _toy()
    a = labelled_subset(coco, 0.25, seed=42)
    b = labelled_subset(coco, 0.25, seed=42)
    c = labelled_subset(coco, 0.25, seed=7)
    assert a == b
    assert [im["id"] for im in a["images"]] != [im["id"] for im in c["images"]]
    assert len(a["images"]) == 5  # ceil(0.25 * 20 eligible images)


def test_subset_keeps_all_annotations_of_chosen_images_only():
    coco = _toy()
    sub = labelled_subset(coco, 0.5, seed=0)
    chosen = {im["id"] for im in sub["images"]}
    assert 500 not in chosen  # crowd-only images are not eligible
    assert {a["image_id"] for a in sub["annotations"]} <= chosen
    expected = [a for a in coco["annotations"] if a["image_id"] in chosen]
    assert sub["annotations"] == expected
    assert sub["categories"] == coco["categories"]


def test_coverage_reports_missing_categories():
    coco = _toy()
    sub = labelled_subset(coco, 1.0, seed=0)
    cov = coverage(sub, coco)
    assert cov["categories_total"] == 4 and cov["categories_covered"] == 3
    assert cov["missing_categories"] == ["c4"]
    assert cov["instances"] == 20


def test_bad_fraction():
    with pytest.raises(UserError, match="fraction"):
        labelled_subset(_toy(), 0.0, seed=0)


def test_coco_mini_half_split():
    root = require_shared(COCO_MINI)
    coco = json.loads((root / "annotations" / "instances_train2017.json").read_text())
    sub = labelled_subset(coco, 0.5, seed=42)
    cov = coverage(sub, coco)
    assert sub == labelled_subset(coco, 0.5, seed=42)
    assert cov["images"] == -(-len({a["image_id"] for a in coco["annotations"] if not a["iscrowd"]}) // 2)
    assert 0 < cov["categories_covered"] <= 80
