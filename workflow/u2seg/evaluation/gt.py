"""Ground truth for evaluation.

* COCO instances (for AP), restricted to the manifest's images.
* Panoptic GT, either the official COCO panoptic json + PNGs, or - when only instances exist -
  a *things-only* panoptic GT rasterised from the instances:
  crowd annotations are painted first (one crowd segment per category and image, all crowd
  regions of that category together), then the non-crowd instances by descending mask area, so
  smaller instances lie on top of larger ones; instances left without a visible pixel are
  dropped; every unlabelled pixel is VOID (id 0), so predictions there are never false positives.
* Semantic class sets derived from panoptic GT: STEGO's COCO-Stuff-27 (12 thing + 15 stuff
  super-categories) and U2Seg's released 16 classes (0 = things, 1..15 stuff super-categories).
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image

from u2seg.coco_format import decode_mask, rgb2id
from u2seg.errors import UserError
from u2seg.jsonio import load_json

log = logging.getLogger(__name__)

IGNORE = 255  # ignored label in semantic maps

# STEGO's COCO-Stuff-27 order (coarse ids 0..11 = thing super-categories, 12..26 = stuff), as COCO
# super-category names.
COCOSTUFF27_SUPERCATEGORIES: tuple[str, ...] = (
    "electronic", "appliance", "food", "furniture", "indoor", "kitchen", "accessory", "animal",
    "outdoor", "person", "sports", "vehicle",
    "ceiling", "floor", "food-stuff", "furniture-stuff", "raw-material", "textile", "wall", "window",
    "building", "ground", "plant", "sky", "solid", "structural", "water",
)
COCOSTUFF27_NAMES: tuple[str, ...] = tuple(
    {"food": "food-things", "furniture": "furniture-things"}.get(n, n) if i < 12 else n
    for i, n in enumerate(COCOSTUFF27_SUPERCATEGORIES))
NUM_THING_SUPERCATEGORIES = 12

# U2Seg's 15 COCO stuff super-categories (docs/method.md §8.1(b)); 16-class index = 1 + position, 0 = things.
U2SEG_STUFF_SUPERCATEGORIES: tuple[str, ...] = (
    "textile", "building", "raw-material", "furniture-stuff", "floor", "plant", "food-stuff", "ground",
    "structural", "water", "wall", "window", "ceiling", "sky", "solid",
)
U2SEG16_NAMES: tuple[str, ...] = ("things",) + U2SEG_STUFF_SUPERCATEGORIES
# Category ids of the stuff super-categories in the U2Seg panoptic protocol (things keep COCO ids).
STUFF_SUPERCATEGORY_ID_BASE = 1000


@dataclass(frozen=True)
class Category:
    """A ground-truth category."""

    id: int
    name: str
    isthing: bool
    supercategory: str


@dataclass
class PanopticGT:
    """Per-image sources of the panoptic ground truth (picklable, loaded lazily in workers)."""

    kind: str  # "coco_panoptic" or "things_only"
    categories: list[Category]
    # image_id -> ("png", path, segments_info) or ("instances", annotations, height, width)
    sources: dict[int, tuple]

    @property
    def label(self) -> str:
        """Human-readable name of the GT kind (written into metrics.json / .md)."""
        return ("COCO panoptic GT" if self.kind == "coco_panoptic"
                else "things-only GT (rasterised COCO instances; unlabelled pixels VOID)")


def load_instances(path: str | Path, image_ids: Iterable[int]) -> dict[str, Any]:
    """COCO instances json restricted to ``image_ids`` (every id must be in the json)."""
    data = load_json(path)
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise UserError(f"{path}: not a COCO instances json (missing {key!r})")
    wanted = [int(i) for i in image_ids]
    by_id = {int(im["id"]): im for im in data["images"]}
    missing = [i for i in wanted if i not in by_id]
    if missing:
        raise UserError(f"{path}: {len(missing)} manifest images have no ground truth (e.g. id {missing[0]})")
    keep = set(wanted)
    return {
        "images": [by_id[i] for i in wanted],
        "annotations": [a for a in data["annotations"] if int(a["image_id"]) in keep],
        "categories": data["categories"],
    }


def instance_categories(instances: dict[str, Any]) -> list[Category]:
    """Thing categories of a COCO instances dict."""
    return [Category(int(c["id"]), str(c["name"]), True, str(c.get("supercategory", c["name"])))
            for c in instances["categories"]]


def rasterise_instances(annotations: list[dict[str, Any]], height: int, width: int
                        ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Things-only panoptic GT of one image: (ids (H, W) int64, 0 = VOID; segments_info).

    Crowd regions first (merged per category), then non-crowd instances by descending mask
    area (ties: larger annotation id on top); hidden instances are dropped.
    """
    crowd: dict[int, np.ndarray] = {}
    things: list[tuple[int, int, int, np.ndarray]] = []  # (area, ann id, category, mask)
    for ann in annotations:
        mask = decode_mask(ann["segmentation"], height, width)
        if mask.shape != (height, width):
            raise UserError(f"annotation {ann.get('id')}: mask shape {mask.shape} != image {(height, width)}")
        cat = int(ann["category_id"])
        if ann.get("iscrowd", 0):
            crowd[cat] = crowd[cat] | mask if cat in crowd else mask
        else:
            things.append((int(mask.sum()), int(ann.get("id", 0)), cat, mask))
    layers: list[tuple[int, int]] = []  # (category, iscrowd) per painted layer
    ids = np.zeros((height, width), dtype=np.int64)
    for cat in sorted(crowd):
        layers.append((cat, 1))
        ids[crowd[cat]] = len(layers)
    for _, _, cat, mask in sorted(things, key=lambda t: (-t[0], t[1])):
        layers.append((cat, 0))
        ids[mask] = len(layers)
    areas = np.bincount(ids.ravel(), minlength=len(layers) + 1)
    visible = [k for k in range(1, len(layers) + 1) if areas[k] > 0]
    remap = np.zeros(len(layers) + 1, dtype=np.int64)
    segments = []
    for new_id, k in enumerate(visible, start=1):
        remap[k] = new_id
        cat, iscrowd = layers[k - 1]
        segments.append({"id": new_id, "category_id": cat, "iscrowd": iscrowd, "area": int(areas[k])})
    return remap[ids], segments


def things_only_panoptic(instances: dict[str, Any]) -> PanopticGT:
    """Things-only panoptic GT (rasterised lazily per image) from a COCO instances dict."""
    by_image: dict[int, list[dict[str, Any]]] = {int(im["id"]): [] for im in instances["images"]}
    for ann in instances["annotations"]:
        by_image[int(ann["image_id"])].append(ann)
    sources = {int(im["id"]): ("instances", by_image[int(im["id"])], int(im["height"]), int(im["width"]))
               for im in instances["images"]}
    return PanopticGT("things_only", instance_categories(instances), sources)


def load_panoptic(json_path: str | Path, png_dir: str | Path, image_ids: Iterable[int]) -> PanopticGT:
    """Official COCO panoptic GT for ``image_ids`` (every id must have an annotation)."""
    data = load_json(json_path)
    for key in ("annotations", "categories"):
        if key not in data:
            raise UserError(f"{json_path}: not a COCO panoptic json (missing {key!r})")
    cats = [Category(int(c["id"]), str(c["name"]), bool(c.get("isthing", 0)),
                     str(c.get("supercategory", c["name"]))) for c in data["categories"]]
    anns = {int(a["image_id"]): a for a in data["annotations"]}
    sources: dict[int, tuple] = {}
    for image_id in image_ids:
        ann = anns.get(int(image_id))
        if ann is None:
            raise UserError(f"{json_path}: no panoptic annotation for image id {image_id}")
        sources[int(image_id)] = ("png", str(Path(png_dir) / ann["file_name"]), ann["segments_info"])
    return PanopticGT("coco_panoptic", cats, sources)


def read_panoptic_png(path: str | Path) -> np.ndarray:
    """Segment-id map (H, W) uint32 (id = R + 256 G + 256^2 B) of a COCO panoptic PNG."""
    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"))
    except FileNotFoundError as exc:
        raise UserError(f"panoptic PNG not found: {path}") from exc
    if sys.byteorder != "little":  # pragma: no cover
        return rgb2id(arr)
    rgba = np.zeros(arr.shape[:2] + (4,), np.uint8)
    rgba[..., :3] = arr
    return rgba.view("<u4")[..., 0]


def panoptic_image(source: tuple) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """(segment ids (H, W) int64, segments_info) of one image's panoptic GT source."""
    if source[0] == "png":
        return read_panoptic_png(source[1]), list(source[2])
    if source[0] == "instances":
        return rasterise_instances(source[1], source[2], source[3])
    raise ValueError(f"unknown GT source {source[0]!r}")


# ---------------------------------------------------------------------------- category protocols
def u2seg_panoptic_categories(categories: list[Category]) -> tuple[list[Category], dict[int, int]]:
    """U2Seg's panoptic class set (method §8.1(d)): things keep their ids, each stuff category maps
    to its super-category (id ``1000 + i``, i = 1..15). Returns (eval categories, id map)."""
    out = [c for c in categories if c.isthing]
    cat_map = {c.id: c.id for c in out}
    for i, name in enumerate(U2SEG_STUFF_SUPERCATEGORIES, start=1):
        out.append(Category(STUFF_SUPERCATEGORY_ID_BASE + i, name, False, name))
    for c in categories:
        if not c.isthing:
            if c.supercategory not in U2SEG_STUFF_SUPERCATEGORIES:
                raise UserError(f"stuff category {c.name!r} has unknown super-category {c.supercategory!r}")
            cat_map[c.id] = STUFF_SUPERCATEGORY_ID_BASE + 1 + U2SEG_STUFF_SUPERCATEGORIES.index(c.supercategory)
    if not any(not c.isthing for c in categories):  # things-only GT: no stuff classes to evaluate
        out = [c for c in out if c.isthing]
    return out, cat_map


def semantic_lut(categories: list[Category], protocol: str) -> dict[int, int]:
    """GT category id -> semantic class index for ``protocol`` (``cocostuff27`` or ``u2seg16``)."""
    lut: dict[int, int] = {}
    for c in categories:
        if protocol == "cocostuff27":
            names = COCOSTUFF27_SUPERCATEGORIES[:NUM_THING_SUPERCATEGORIES] if c.isthing \
                else COCOSTUFF27_SUPERCATEGORIES[NUM_THING_SUPERCATEGORIES:]
            if c.supercategory not in names:
                raise UserError(f"category {c.name!r}: super-category {c.supercategory!r} not in COCO-Stuff-27")
            offset = 0 if c.isthing else NUM_THING_SUPERCATEGORIES
            lut[c.id] = offset + names.index(c.supercategory)
        elif protocol == "u2seg16":
            if c.isthing:
                lut[c.id] = 0
            elif c.supercategory in U2SEG_STUFF_SUPERCATEGORIES:
                lut[c.id] = 1 + U2SEG_STUFF_SUPERCATEGORIES.index(c.supercategory)
            else:
                raise UserError(f"stuff category {c.name!r}: unknown super-category {c.supercategory!r}")
        else:
            raise ValueError(f"unknown semantic protocol {protocol!r}")
    return lut


def semantic_gt(ids: np.ndarray, segments: list[dict[str, Any]], lut: dict[int, int]) -> np.ndarray:
    """Semantic label map (H, W) uint8 from a panoptic GT: class index per pixel, ``IGNORE`` for
    VOID and unknown segment ids (crowd regions keep their class)."""
    seg_ids = np.array([int(s["id"]) for s in segments], dtype=np.int64)
    order = np.argsort(seg_ids)
    seg_ids = seg_ids[order]
    labels = np.array([lut.get(int(s["category_id"]), IGNORE) for s in segments], dtype=np.uint8)[order]
    if len(seg_ids) == 0:
        return np.full(ids.shape, IGNORE, dtype=np.uint8)
    pos = np.clip(np.searchsorted(seg_ids, ids), 0, len(seg_ids) - 1)
    return np.where(seg_ids[pos] == ids, labels[pos], IGNORE).astype(np.uint8)
