"""Consistency checks (``u2seg validate-panoptic``) of COCO panoptic (+ semantic, + instance) labels.

Panoptic: every non-zero id of every PNG is listed in its ``segments_info`` and vice versa, ids are
unique (segments are therefore disjoint), areas and boxes equal the pixels, categories exist, the
PNG size equals the image size, one annotation per image. Semantic PNGs (optional): 0 on thing
pixels, 1..S on stuff pixels (stuff categories in id order), 255 on void. Instance json
(optional): loads in pycocotools, categories / images exist, RLE sizes match the images, areas and
boxes equal the RLE's.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from u2seg.atomic import write_json
from u2seg.coco_format import rgb2id
from u2seg.errors import UserError

log = logging.getLogger(__name__)


class _Errors(list):
    """Error list that stops growing (but keeps counting) after ``limit`` messages."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit
        self.total = 0

    def add(self, msg: str) -> None:
        self.total += 1
        if len(self) < self.limit:
            self.append(msg)


def _read_png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def validate_panoptic(data: dict[str, Any], png_dir: str | Path, semantic_dir: str | Path | None = None,
                      max_errors: int = 100) -> tuple[list[str], dict[str, Any]]:
    """Check a COCO panoptic dict against its PNG folder; returns (errors, statistics)."""
    png_dir = Path(png_dir)
    errors = _Errors(max_errors)
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            errors.add(f"panoptic json: missing list {key!r}")
    if errors.total:
        return list(errors), {"errors": errors.total}
    cats: dict[int, dict] = {}
    for cat in data["categories"]:
        if cat.get("id") in cats:
            errors.add(f"category id {cat.get('id')} listed twice")
        if cat.get("isthing") not in (0, 1):
            errors.add(f"category {cat.get('id')}: isthing must be 0 or 1")
        cats[cat.get("id")] = cat
    stuff_ids = sorted(c for c, v in cats.items() if v.get("isthing") == 0)
    semantic_value = {c: i + 1 for i, c in enumerate(stuff_ids)}
    images: dict[int, dict] = {}
    for im in data["images"]:
        if im.get("id") in images:
            errors.add(f"image id {im.get('id')} listed twice")
        images[im.get("id")] = im
    seen_images: set[int] = set()
    seen_files: set[str] = set()
    n_segments = 0
    for ann in data["annotations"]:
        image_id = ann.get("image_id")
        where = f"image {image_id} ({ann.get('file_name')})"
        if image_id not in images:
            errors.add(f"{where}: annotation for an unknown image id")
            continue
        if image_id in seen_images:
            errors.add(f"{where}: more than one annotation")
        seen_images.add(image_id)
        if ann.get("file_name") in seen_files:
            errors.add(f"{where}: file_name used twice")
        seen_files.add(ann.get("file_name"))
        path = png_dir / str(ann.get("file_name"))
        if not path.is_file():
            errors.add(f"{where}: PNG missing: {path}")
            continue
        png = _read_png(path)
        h, w = images[image_id].get("height"), images[image_id].get("width")
        if png.ndim != 3 or png.shape[2] != 3:
            errors.add(f"{where}: PNG is not RGB (shape {png.shape})")
            continue
        if png.shape[:2] != (h, w):
            errors.add(f"{where}: PNG is {png.shape[1]}x{png.shape[0]}, image is {w}x{h}")
            continue
        ids = rgb2id(png)
        uniq, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
        inverse = inverse.reshape(ids.shape)
        objects = ndimage.find_objects(inverse + 1)
        pixel = {int(u): (int(n), objects[i]) for i, (u, n) in enumerate(zip(uniq, counts)) if u != 0}
        listed: dict[int, dict] = {}
        for seg in ann.get("segments_info", []):
            sid = seg.get("id")
            n_segments += 1
            if sid in listed:
                errors.add(f"{where}: segment id {sid} listed twice")
            listed[sid] = seg
            if sid == 0:
                errors.add(f"{where}: segment id 0 is reserved for void")
            if seg.get("category_id") not in cats:
                errors.add(f"{where}: segment {sid} has unknown category {seg.get('category_id')}")
            if seg.get("iscrowd", 0) not in (0, 1):
                errors.add(f"{where}: segment {sid} iscrowd must be 0 or 1")
            if sid not in pixel:
                errors.add(f"{where}: segment {sid} listed but absent from the PNG")
                continue
            area, sl = pixel[sid]
            if seg.get("area") != area:
                errors.add(f"{where}: segment {sid} area {seg.get('area')} != {area} pixels")
            box = [sl[1].start, sl[0].start, sl[1].stop - sl[1].start, sl[0].stop - sl[0].start]
            if [float(v) for v in seg.get("bbox", [])] != [float(v) for v in box]:
                errors.add(f"{where}: segment {sid} bbox {seg.get('bbox')} != pixel box {box}")
        for sid in pixel:
            if sid not in listed:
                errors.add(f"{where}: PNG id {sid} not listed in segments_info")
        if semantic_dir is not None:
            sem_path = Path(semantic_dir) / str(ann.get("file_name"))
            if not sem_path.is_file():
                errors.add(f"{where}: semantic PNG missing: {sem_path}")
                continue
            sem = _read_png(sem_path)
            if sem.shape != (h, w):
                errors.add(f"{where}: semantic PNG shape {sem.shape} != {(h, w)}")
                continue
            lut_ids = np.array(sorted(listed), dtype=np.int64)
            expect = np.full(ids.shape, 255, dtype=np.int64)
            for sid in lut_ids:
                cat = cats.get(listed[sid].get("category_id"), {})
                value = 0 if cat.get("isthing") == 1 else semantic_value.get(listed[sid].get("category_id"), 255)
                expect[ids == sid] = value
            bad = int((expect != sem).sum())
            if bad:
                errors.add(f"{where}: semantic PNG disagrees with the panoptic PNG on {bad} pixels")
    for image_id in images:
        if image_id not in seen_images:
            errors.add(f"image {image_id}: no panoptic annotation")
    stats = {"images": len(images), "annotations": len(data["annotations"]), "segments": n_segments,
             "categories": len(cats), "errors": errors.total}
    return list(errors), stats


def validate_instances(path: str | Path, num_categories: int | None = None,
                       max_errors: int = 100) -> tuple[list[str], dict[str, Any]]:
    """Check a COCO instance json (loads in pycocotools; RLE sizes, areas, boxes, categories)."""
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    errors = _Errors(max_errors)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(path))
    except Exception as exc:  # any failure to load is the finding being reported
        return [f"{path}: pycocotools cannot load it: {type(exc).__name__}: {exc}"], {"errors": 1}
    cat_ids = sorted(coco.cats)
    if num_categories is not None and cat_ids != list(range(1, num_categories + 1)):
        errors.add(f"categories are {cat_ids[:5]}..., expected 1..{num_categories}")
    ann_ids: set[int] = set()
    for ann in coco.dataset.get("annotations", []):
        aid = ann.get("id")
        where = f"annotation {aid} (image {ann.get('image_id')})"
        if aid in ann_ids:
            errors.add(f"{where}: id used twice")
        ann_ids.add(aid)
        if ann.get("category_id") not in coco.cats:
            errors.add(f"{where}: unknown category {ann.get('category_id')}")
        im = coco.imgs.get(ann.get("image_id"))
        if im is None:
            errors.add(f"{where}: unknown image")
            continue
        seg = ann.get("segmentation")
        if not isinstance(seg, dict) or "counts" not in seg:
            errors.add(f"{where}: segmentation is not an RLE")
            continue
        if list(seg.get("size", [])) != [im["height"], im["width"]]:
            errors.add(f"{where}: RLE size {seg.get('size')} != image [h, w] {[im['height'], im['width']]}")
            continue
        rle = dict(seg, counts=seg["counts"].encode("ascii") if isinstance(seg["counts"], str) else seg["counts"])
        area = int(mask_utils.area(rle))
        if ann.get("area") != area:
            errors.add(f"{where}: area {ann.get('area')} != RLE area {area}")
        if not np.allclose(ann.get("bbox", []), mask_utils.toBbox(rle), atol=1e-6):
            errors.add(f"{where}: bbox {ann.get('bbox')} != RLE box {mask_utils.toBbox(rle).tolist()}")
        if area == 0:
            errors.add(f"{where}: empty mask")
        if ann.get("iscrowd", 0) not in (0, 1):
            errors.add(f"{where}: iscrowd must be 0 or 1")
    stats = {"images": len(coco.imgs), "annotations": len(ann_ids), "categories": len(cat_ids),
             "errors": errors.total}
    return list(errors), stats


def validate_dataset(*, panoptic_json: Path, panoptic_dir: Path, semantic_dir: Path | None, instances: Path | None,
                     num_things: int | None, report_path: Path | None, max_errors: int) -> int:
    """``u2seg validate-panoptic``: check the labels, write the findings (``report_path``), fail on a problem."""
    if not panoptic_json.is_file():
        raise UserError(f"panoptic json not found: {panoptic_json}")
    with open(panoptic_json) as fh:
        data = json.load(fh)
    errors, stats = validate_panoptic(data, panoptic_dir, semantic_dir, max_errors)
    report: dict[str, Any] = {"panoptic": dict(stats, messages=errors)}
    total = stats["errors"]
    if instances is not None:
        ierrors, istats = validate_instances(instances, num_things, max_errors)
        report["instances"] = dict(istats, messages=ierrors)
        errors = errors + ierrors
        total += istats["errors"]
    report["ok"] = total == 0
    if report_path is not None:
        write_json(report_path, report, indent=1)
    if total:
        shown = "\n  ".join(errors[:20])
        raise UserError(f"validate-panoptic: {total} problem(s); first ones:\n  {shown}")
    msg = (f"OK: {stats['images']} images, {stats['segments']} segments, {stats['categories']} categories"
           + (f"; instances: {report['instances']['annotations']} annotations" if instances else ""))
    log.info("%s", msg)
    print(msg)
    return 0
