"""``u2seg merge-masks``: per-shard MaskCut jsons -> one COCO instances json + summary + gallery.

Annotation ids are renumbered 1..M in shard order; the shards' ``stats`` go to ``summary.json``
(masks-per-image histogram, images without a mask, timings, eigensolver diagnostics); the shards'
overlay PNGs are collected into one gallery folder.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from u2seg.atomic import atomic_path, write_json
from u2seg.coco_format import instances_json
from u2seg.errors import UserError

log = logging.getLogger(__name__)

# The single class-agnostic category of MaskCut masks.
CATEGORIES = [{"id": 1, "name": "fg", "supercategory": "fg"}]


def merge_shards(shards: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Merge shard jsons (as written by ``u2seg maskcut``) -> (COCO instances dict, summary dict)."""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    seen: set[int] = set()
    stats = []
    for shard in shards:
        for im in shard["images"]:
            if im["id"] in seen:
                raise UserError(f"image id {im['id']} ({im['file_name']}) appears in more than one shard")
            seen.add(im["id"])
            images.append(im)
        for ann in shard["annotations"]:
            if ann["image_id"] not in seen:
                raise UserError(f"annotation {ann['id']} refers to image {ann['image_id']} outside its shard")
            annotations.append(dict(ann, id=len(annotations) + 1))
        if "stats" in shard:
            stats.append(shard["stats"])
    params = [json.dumps(s.get("params"), sort_keys=True) for s in stats]
    if len(set(params)) > 1:
        raise UserError("the shards were made with different MaskCut parameters; rerun them")
    merged = instances_json(images, annotations, CATEGORIES,
                            info={"description": "u2seg MaskCut class-agnostic pseudo-masks",
                                  "maskcut": stats[0]["params"] if stats else None})
    return merged, summarize(images, annotations, stats)


def summarize(images: list[dict[str, Any]], annotations: list[dict[str, Any]],
              stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Masks-per-image histogram, images with zero masks, areas, timings."""
    per_image = Counter(a["image_id"] for a in annotations)
    counts = [per_image.get(im["id"], 0) for im in images]
    hist = Counter(counts)
    zero = [im["file_name"] for im in images if per_image.get(im["id"], 0) == 0]
    seconds: Counter[str] = Counter()
    eigen: Counter[str] = Counter()
    total = 0.0
    for s in stats:
        seconds.update(s.get("seconds", {}))
        eigen.update(s.get("eigen", {}))
        total += float(s.get("seconds_total", 0.0))
    n = max(len(images), 1)
    image_area = {im["id"]: im["width"] * im["height"] for im in images}
    rel_area = [a["area"] / image_area[a["image_id"]] for a in annotations]
    first = stats[0] if stats else {}
    return {
        "n_images": len(images),
        "n_masks": len(annotations),
        "masks_per_image_mean": len(annotations) / n,
        "masks_per_image_histogram": {str(k): hist[k] for k in sorted(hist)},
        "images_without_masks": len(zero),
        "images_without_masks_files": zero[:50],
        "mask_area_fraction_mean": (sum(rel_area) / len(rel_area)) if rel_area else None,
        "backbone": first.get("backbone"),
        "input_size": first.get("input_size"),
        "grid": first.get("grid"),
        "device": first.get("device"),
        "params": first.get("params"),
        "seconds_total": round(total, 3),
        "seconds_per_image": round(total / n, 4),
        "seconds_by_step": {k: round(v, 3) for k, v in sorted(seconds.items())},
        "eigen": dict(eigen),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inputs", type=Path, nargs="+", required=True, help="shard jsons, in shard order")
    parser.add_argument("--galleries", type=Path, nargs="*", default=[], help="shard gallery folders")
    parser.add_argument("--out", type=Path, required=True, help="merged COCO instances json")
    parser.add_argument("--summary", type=Path, required=True, help="summary json")
    parser.add_argument("--gallery-out", type=Path, required=True, help="folder collecting the overlay PNGs")


def run(args: argparse.Namespace) -> int:
    shards = []
    for path in args.inputs:
        try:
            with open(path) as fh:
                shards.append(json.load(fh))
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"cannot read MaskCut shard json {path}: {exc}") from exc
    merged, summary = merge_shards(shards)
    with atomic_path(args.gallery_out, directory=True) as tmp:
        for folder in args.galleries:
            if not folder.is_dir():
                raise UserError(f"gallery folder not found: {folder}")
            for png in sorted(folder.glob("*.png")):
                if (tmp / png.name).exists():
                    raise UserError(f"two shards wrote the gallery image {png.name}")
                shutil.copyfile(png, tmp / png.name)
        write_json(args.out, merged)
        write_json(args.summary, summary, indent=2)
    log.info("merged %d shards: %d images, %d masks (%.2f / image, %d without a mask) -> %s", len(shards),
             summary["n_images"], summary["n_masks"], summary["masks_per_image_mean"],
             summary["images_without_masks"], args.out)
    return 0
