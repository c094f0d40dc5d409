"""Ground truth of any COCO-format dataset (config ``datasets``), as the evaluation protocols need it.

* Instances: the dataset's COCO instances json; a dataset with only a COCO panoptic GT gets its
  instances from the panoptic PNGs (every segment of an ``isthing`` category becomes one instance,
  RLE mask, ``iscrowd`` kept from ``segments_info``), as panopticapi's detection converter does.
  Crowd annotations are ignore regions in COCOeval (``iscrowd`` is COCOeval's ignore flag).
* Whether the COCO-specific class protocols apply: ``semantic/stego27``, ``semantic/u2seg16`` and
  both panoptic protocols group categories by COCO super-category; a dataset whose categories use
  other super-categories (VOC, UVO, Cityscapes, ...) is evaluated class-agnostically and with the
  instance matching protocols, plus the protocols named in its ``protocols`` list.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

from u2seg.coco_format import instance_annotation
from u2seg.errors import UserError
from u2seg.evaluation import gt as gtmod
from u2seg.jsonio import load_json

log = logging.getLogger(__name__)


def instances_from_panoptic(json_path: str | Path, png_dir: str | Path, image_ids: Iterable[int]
                            ) -> dict[str, Any]:
    """COCO instances dict of ``image_ids`` from a COCO panoptic GT (thing segments -> instances)."""
    data = load_json(json_path)
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise UserError(f"{json_path}: not a COCO panoptic json (missing {key!r})")
    things = {int(c["id"]): c for c in data["categories"] if c.get("isthing", 0)}
    images = {int(im["id"]): im for im in data["images"]}
    anns = {int(a["image_id"]): a for a in data["annotations"]}
    out_images, out_anns = [], []
    for image_id in (int(i) for i in image_ids):
        if image_id not in images or image_id not in anns:
            raise UserError(f"{json_path}: no image / panoptic annotation for image id {image_id}")
        ids = gtmod.read_panoptic_png(Path(png_dir) / anns[image_id]["file_name"])
        out_images.append({k: images[image_id][k] for k in ("id", "file_name", "width", "height")
                           if k in images[image_id]} | {"height": int(ids.shape[0]), "width": int(ids.shape[1])})
        for seg in anns[image_id]["segments_info"]:
            cat = int(seg["category_id"])
            if cat not in things:
                continue
            mask = ids == int(seg["id"])
            if not mask.any():
                continue
            ann = instance_annotation(mask, len(out_anns) + 1, image_id, cat)
            ann["iscrowd"] = int(seg.get("iscrowd", 0))
            out_anns.append(ann)
    categories = [{"id": c_id, "name": str(c["name"]), "supercategory": str(c.get("supercategory", c["name"]))}
                  for c_id, c in sorted(things.items())]
    return {"images": out_images, "annotations": out_anns, "categories": categories}


def manifest_instances(manifest: dict[str, Any], image_ids: list[int]) -> tuple[dict[str, Any], str]:
    """(COCO instances GT of ``image_ids``, where it came from) for a manifest with ground truth."""
    if manifest.get("annotations"):
        return gtmod.load_instances(manifest["annotations"], image_ids), str(manifest["annotations"])
    pan = manifest.get("panoptic")
    if pan:
        return (instances_from_panoptic(pan["json"], pan["png_dir"], image_ids),
                f"thing segments of the panoptic GT {pan['json']}")
    raise UserError("the dataset has no ground truth (manifest `annotations` and `panoptic` are null): evaluate "
                    "needs COCO instance and/or panoptic annotations (config `datasets`: instances / panoptic)")


def coco_super_categories(categories: list[gtmod.Category]) -> bool:
    """Whether every category's super-category is one of COCO-Stuff-27's (things) / U2Seg's (stuff)."""
    things = set(gtmod.COCOSTUFF27_SUPERCATEGORIES[:gtmod.NUM_THING_SUPERCATEGORIES])
    stuff = set(gtmod.COCOSTUFF27_SUPERCATEGORIES[gtmod.NUM_THING_SUPERCATEGORIES:]) \
        & set(gtmod.U2SEG_STUFF_SUPERCATEGORIES)
    return all(c.supercategory in (things if c.isthing else stuff) for c in categories)
