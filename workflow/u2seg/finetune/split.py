"""Seeded labelled subsets of a COCO instances json (the 1 % / 2 % / 5 % few-shot splits).

The split draws whole images: the eligible images (those with at least one non-crowd
annotation, sorted by id) are permuted with ``numpy.random.default_rng(seed)`` and the first
``ceil(fraction * n)`` (at least one) are kept with all their annotations. The same json, fraction
and seed always give the same subset; the coverage report says which categories it misses.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from u2seg.errors import UserError


def eligible_image_ids(coco: dict[str, Any]) -> list[int]:
    """Ids of images with at least one non-crowd annotation, sorted."""
    return sorted({a["image_id"] for a in coco["annotations"] if not a.get("iscrowd", 0)})


def labelled_subset(coco: dict[str, Any], fraction: float, seed: int) -> dict[str, Any]:
    """The labelled subset: the chosen images, all their annotations, every category."""
    if not 0 < fraction <= 1:
        raise UserError(f"finetune.fraction must be in (0, 1], got {fraction}")
    ids = eligible_image_ids(coco)
    if not ids:
        raise UserError("the annotation json has no image with a non-crowd annotation")
    k = max(1, math.ceil(fraction * len(ids)))
    order = np.random.default_rng(seed).permutation(len(ids))
    chosen = {ids[i] for i in order[:k]}
    images = [im for im in sorted(coco["images"], key=lambda im: im["id"]) if im["id"] in chosen]
    annotations = [a for a in coco["annotations"] if a["image_id"] in chosen]
    return {
        "info": {**coco.get("info", {}), "u2seg_split": {"fraction": fraction, "seed": seed,
                                                        "eligible_images": len(ids), "chosen_images": k}},
        "images": images,
        "annotations": annotations,
        "categories": coco["categories"],
    }


def coverage(subset: dict[str, Any], full: dict[str, Any]) -> dict[str, Any]:
    """Per-category instance counts in the subset and the categories it misses."""
    names = {c["id"]: c["name"] for c in full["categories"]}
    counts = Counter(a["category_id"] for a in subset["annotations"] if not a.get("iscrowd", 0))
    full_counts = Counter(a["category_id"] for a in full["annotations"] if not a.get("iscrowd", 0))
    missing = sorted(names[c] for c in names if counts[c] == 0)
    return {
        "images": len(subset["images"]),
        "instances": int(sum(counts.values())),
        "categories_covered": len(names) - len(missing),
        "categories_total": len(names),
        "missing_categories": missing,
        "instances_per_category": {names[c]: int(counts[c]) for c in sorted(names)},
        "instances_per_category_full": {names[c]: int(full_counts[c]) for c in sorted(names)},
    }
