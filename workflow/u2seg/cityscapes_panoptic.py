"""``u2seg cityscapes-panoptic``: Cityscapes gtFine -> a COCO panoptic GT the pipeline ingests.

Two sources (docs/own-images.md, "Cityscapes"):

* ``--gtfine gtFine/val``: the official ``*_gtFine_instanceIds.png`` files (value = label id, or
  label id x 1000 + instance for instance classes). Every label 7..33 (the 27 classes of the
  ``cityscapes/cups27`` protocol) becomes a category; a pixel value < 1000 of an instance class is
  a crowd segment (as cityscapesScripts does); other labels are VOID.
* ``--from-cityscapesscripts cityscapes_panoptic_val.json``: the json written by cityscapesScripts'
  ``csCreatePanopticImgs`` (19 classes: it drops the ``ignoreInEval`` labels), re-laid for ingestion:
  its image ``file_name`` ``<stem>_gtFine_leftImg8bit.png`` (the instanceIds name with
  ``_instanceIds`` replaced) names no file; the image is ``<city>/<stem>_leftImg8bit.png``.

Both write integer image ids (1.. in file order) and image ``file_name``s relative to
``leftImg8bit/<split>`` (``<city>/<name>_leftImg8bit.png``); the PNGs are referenced, not rewritten,
in the second mode.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from u2seg import atomic
from u2seg.coco_format import id2rgb, mask_bbox
from u2seg.errors import UserError
from u2seg.evaluation.cityscapes import LABELS_27
from u2seg.jsonio import load_json
from u2seg.params import record_beside

log = logging.getLogger(__name__)

SUFFIX = "_gtFine_instanceIds.png"


def categories() -> list[dict[str, Any]]:
    """The 27 COCO panoptic categories (id = Cityscapes label id)."""
    return [{"id": i, "name": n, "supercategory": c, "isthing": int(t)} for i, n, _, c, t in LABELS_27]


def convert_instance_ids(values: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """(segment-id map with 0 = VOID, segments_info) of one ``instanceIds`` array."""
    things = {i: t for i, _, _, _, t in LABELS_27}
    ids = np.zeros(values.shape, np.int64)
    segments = []
    for v in np.unique(values):
        label = int(v) if v < 1000 else int(v) // 1000
        if label not in things:
            continue
        mask = values == v
        ids[mask] = int(v)
        segments.append({"id": int(v), "category_id": label, "area": int(mask.sum()),
                         "bbox": [int(b) for b in mask_bbox(mask)], "iscrowd": int(things[label] and v < 1000)})
    return ids, segments


def from_gtfine(gtfine: Path, out_dir: Path) -> dict[str, Any]:
    """Convert every ``<city>/*_gtFine_instanceIds.png`` under ``gtfine``; PNGs written to ``out_dir``."""
    files = sorted(gtfine.glob(f"*/*{SUFFIX}"))
    if not files:
        raise UserError(f"no */*{SUFFIX} under {gtfine} (give a gtFine split folder, e.g. gtFine/val)")
    images, annotations = [], []
    for image_id, f in enumerate(files, start=1):
        values = np.asarray(Image.open(f)).astype(np.int64)
        ids, segments = convert_instance_ids(values)
        stem = f.name[:-len(SUFFIX)]
        png = f"{stem}_gtFine_panoptic.png"
        atomic.save_png(out_dir / png, id2rgb(ids))
        images.append({"id": image_id, "file_name": f"{f.parent.name}/{stem}_leftImg8bit.png",
                       "height": int(values.shape[0]), "width": int(values.shape[1])})
        annotations.append({"image_id": image_id, "file_name": png, "segments_info": segments})
    return {"images": images, "annotations": annotations, "categories": categories()}


CS_SCRIPTS_IMAGE_SUFFIX = "_gtFine_leftImg8bit.png"  # what csCreatePanopticImgs writes as file_name
IMAGE_SUFFIX = "_leftImg8bit.png"  # the leftImg8bit image


def image_file_name(image: dict[str, Any]) -> str:
    """``<city>/<stem>_leftImg8bit.png`` of a csCreatePanopticImgs image entry (id = ``<stem>``,
    ``<city>_<seq>_<frame>``)."""
    name = str(image["file_name"])
    if name.endswith(CS_SCRIPTS_IMAGE_SUFFIX):
        name = name[:-len(CS_SCRIPTS_IMAGE_SUFFIX)] + IMAGE_SUFFIX
    return f"{str(image['id']).split('_')[0]}/{name}"


def relay(data: dict[str, Any]) -> dict[str, Any]:
    """A csCreatePanopticImgs json with integer ids and ``<city>/<stem>_leftImg8bit.png`` image names."""
    if not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
        raise UserError("not a COCO panoptic json (images / annotations missing)")
    new_id = {str(im["id"]): i for i, im in enumerate(sorted(data["images"], key=lambda im: str(im["id"])), start=1)}
    images = [dict(im, id=new_id[str(im["id"])], file_name=image_file_name(im)) for im in data["images"]]
    annotations = [dict(a, image_id=new_id[str(a["image_id"])]) for a in data["annotations"]]
    return {"images": sorted(images, key=lambda im: im["id"]), "annotations": annotations,
            "categories": data["categories"]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``u2seg cityscapes-panoptic``."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--gtfine", type=Path, help="a gtFine split folder (gtFine/val) with <city>/*_instanceIds.png")
    src.add_argument("--from-cityscapesscripts", type=Path, metavar="JSON",
                     help="cityscapes_panoptic_<split>.json written by csCreatePanopticImgs")
    parser.add_argument("--out-json", type=Path, required=True, help="COCO panoptic json to write")
    parser.add_argument("--out-dir", type=Path, help="--gtfine: folder for the panoptic PNGs")


def config_out(args: argparse.Namespace) -> str | None:
    """Resolved-config record of this run (written by u2seg.cli after a successful run)."""
    return record_beside(args.out_json)


def run(args: argparse.Namespace) -> int:
    """Write the COCO panoptic json (and, from gtFine, its PNGs)."""
    if args.gtfine is not None:
        if args.out_dir is None:
            raise UserError("--gtfine needs --out-dir (folder for the panoptic PNGs)")
        data = from_gtfine(args.gtfine, args.out_dir)
    else:
        data = relay(load_json(args.from_cityscapesscripts))
    atomic.write_json(args.out_json, data)
    log.info("%d images, %d categories -> %s", len(data["images"]), len(data["categories"]), args.out_json)
    return 0
