"""Merging per-shard MaskCut jsons into one COCO instances json + summary + gallery (``u2seg merge-masks``,
:mod:`u2seg.maskcut.merge_cli`).

Annotation ids are renumbered 1..M in shard order; the json is written streaming (one shard in
memory at a time); the shards' ``stats`` go to ``summary.json`` (masks-per-image histogram, images
without a mask, timings, eigensolver diagnostics); the shards' overlay PNGs are collected into one
gallery folder. The rule passes ``--shards-dir`` + ``--num-shards``: its command line does not grow
with the dataset.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

from u2seg.atomic import atomic_path, write_json
from u2seg.errors import UserError
from u2seg.streamjson import dump, finish, first_duplicate

log = logging.getLogger(__name__)

# The single class-agnostic category of MaskCut masks.
CATEGORIES = [{"id": 1, "name": "fg", "supercategory": "fg"}]


class _Summary:
    """Masks-per-image histogram, images with zero masks, areas, timings: updated one shard at a time
    (memory independent of the image count)."""

    def __init__(self) -> None:
        self.n_images = self.n_masks = self.zero = 0
        self.zero_files: list[str] = []
        self.hist: Counter[int] = Counter()
        self.area_sum = 0.0
        self.seconds: Counter[str] = Counter()
        self.eigen: Counter[str] = Counter()
        self.total = 0.0
        self.first: dict[str, Any] | None = None
        self.params: str | None = None

    def add(self, images: list[dict[str, Any]], annotations: list[dict[str, Any]],
            stats: dict[str, Any] | None) -> None:
        per_image = Counter(a["image_id"] for a in annotations)
        image_area = {im["id"]: im["width"] * im["height"] for im in images}
        for im in images:
            n = per_image.get(im["id"], 0)
            self.hist[n] += 1
            if n == 0:
                self.zero += 1
                if len(self.zero_files) < 50:
                    self.zero_files.append(im["file_name"])
        self.area_sum += sum(a["area"] / image_area[a["image_id"]] for a in annotations)
        self.n_images += len(images)
        self.n_masks += len(annotations)
        if stats is None:
            return
        params = json.dumps(stats.get("params"), sort_keys=True)
        if self.first is None:
            self.first, self.params = stats, params
        elif params != self.params:
            raise UserError("the shards were made with different MaskCut parameters; rerun them")
        self.seconds.update(stats.get("seconds", {}))
        self.eigen.update(stats.get("eigen", {}))
        self.total += float(stats.get("seconds_total", 0.0))

    def result(self) -> dict[str, Any]:
        n = max(self.n_images, 1)
        first = self.first or {}
        return {
            "n_images": self.n_images,
            "n_masks": self.n_masks,
            "masks_per_image_mean": self.n_masks / n,
            "masks_per_image_histogram": {str(k): self.hist[k] for k in sorted(self.hist)},
            "images_without_masks": self.zero,
            "images_without_masks_files": self.zero_files,
            "mask_area_fraction_mean": (self.area_sum / self.n_masks) if self.n_masks else None,
            "backbone": first.get("backbone"),
            "input_size": first.get("input_size"),
            "grid": first.get("grid"),
            "device": first.get("device"),
            "params": first.get("params"),
            "seconds_total": round(self.total, 3),
            "seconds_per_image": round(self.total / n, 4),
            "seconds_by_step": {k: round(v, 3) for k, v in sorted(self.seconds.items())},
            "eigen": dict(self.eigen),
        }


def _read_shard(path: Path) -> dict[str, Any]:
    try:
        with open(path) as fh:
            shard = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read MaskCut shard json {path}: {exc}") from exc
    if not isinstance(shard, dict) or not isinstance(shard.get("images"), list) \
            or not isinstance(shard.get("annotations"), list):
        raise UserError(f"{path}: not a MaskCut shard json (needs 'images' and 'annotations' lists)")
    return shard


def _info(params: Any) -> str:
    """The merged json's ``info`` value followed by the opening of its ``images`` list."""
    return dump({"description": "u2seg MaskCut class-agnostic pseudo-masks", "maskcut": params}) + ',"images":['


def write_merged(paths: list[Path], out: Path) -> dict[str, Any]:
    """Stream shard jsons into the merged COCO instances json ``out`` (atomically); returns the summary.

    One shard is in memory at a time: images are written as they are read, annotations (ids renumbered
    1..M) go to a spill file beside ``out`` that is appended after the images, and the summary is
    accumulated per shard. Besides one shard, memory holds 8 bytes per image (the ids, checked for
    duplicates at the end).
    """
    summary = _Summary()
    ids = array("q")
    n_ann = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, tempfile.TemporaryFile("w+", dir=out.parent) as spill:
        with open(tmp, "w") as fh:
            fh.write('{"info":')
            info_written = False  # the info holds the first shard's params: written once it is read
            first_image = first_ann = True
            for path in paths:
                shard = _read_shard(path)
                in_shard = set()
                for im in shard["images"]:
                    in_shard.add(im["id"])
                    ids.append(int(im["id"]))
                annotations = []
                for ann in shard["annotations"]:
                    if ann.get("image_id") not in in_shard:
                        raise UserError(f"{path}: annotation {ann.get('id')} refers to image "
                                        f"{ann.get('image_id')} outside its shard")
                    n_ann += 1
                    annotations.append(dict(ann, id=n_ann))
                summary.add(shard["images"], annotations, shard.get("stats"))
                if not info_written:
                    fh.write(_info(shard["stats"]["params"] if "stats" in shard else None))
                    info_written = True
                for im in shard["images"]:
                    fh.write(("" if first_image else ",") + dump(im))
                    first_image = False
                for ann in annotations:
                    spill.write(("" if first_ann else ",") + dump(ann))
                    first_ann = False
                del shard, annotations
            if not info_written:  # no shard at all
                fh.write(_info(None))
            finish(fh, spill, CATEGORIES)
        dup = first_duplicate(ids)
        if dup is not None:
            raise UserError(f"image id {dup} appears in more than one shard")
    return summary.result()


def shard_paths(folder: Path, num_shards: int) -> tuple[list[Path], list[Path]]:
    """``folder/shard_{i:05d}.json`` and ``folder/shard_{i:05d}_gallery`` for i < num_shards."""
    if num_shards < 1:
        raise UserError(f"--num-shards must be >= 1, got {num_shards}")
    jsons = [folder / f"shard_{i:05d}.json" for i in range(num_shards)]
    missing = [p for p in jsons if not p.is_file()]
    if missing:
        raise UserError(f"{len(missing)} MaskCut shard json(s) missing, e.g. {missing[0]} (run the maskcut rule)")
    return jsons, [folder / f"shard_{i:05d}_gallery" for i in range(num_shards)]


def merge_masks(inputs: list[Path], galleries: list[Path], out: Path, summary_path: Path,
                gallery_out: Path) -> int:
    """Merge the shard jsons ``inputs`` into ``out`` (+ ``summary_path``) and collect the overlay PNGs of the
    ``galleries`` folders into ``gallery_out`` (all written atomically); returns 0."""
    for folder in galleries:
        if not folder.is_dir():
            raise UserError(f"gallery folder not found: {folder}")
    with atomic_path(gallery_out, directory=True) as tmp:
        for folder in galleries:
            for png in sorted(folder.glob("*.png")):
                if (tmp / png.name).exists():
                    raise UserError(f"two shards wrote the gallery image {png.name}")
                shutil.copyfile(png, tmp / png.name)
        summary = write_merged(inputs, out)
        write_json(summary_path, summary, indent=2)
    log.info("merged %d shards: %d images, %d masks (%.2f / image, %d without a mask) -> %s", len(inputs),
             summary["n_images"], summary["n_masks"], summary["masks_per_image_mean"],
             summary["images_without_masks"], out)
    return 0
