"""u2seg pseudo-labels and predictions as detectron2 datasets (any image extension, nested folders).

detectron2's own ``register_coco_panoptic_separated`` / ``register_coco_panoptic`` assume COCO's layout:
JPEG images whose stems equal the PNG stems (``load_sem_seg(image_ext="jpg")``, ``<stem>.jpg`` in
``load_coco_panoptic_json``), so they fail on PNG photos, mixed extensions or nested folders. The
records built here are the ones those loaders return on a COCO-layout dataset, but every image path
and every PNG name comes from the manifest and the jsons (``u2seg.manifest.image_stem`` + ``.png``).

Registered names (``register_u2seg(name, ...)``):
  * ``{name}_separated``: instances + ``sem_seg_file_name`` (PanopticFPN training / ``DatasetMapper``);
    thing classes 0..K-1 (= category_id - 1), semantic PNG values as stored (0 = things, 1..S stuff);
  * ``{name}_panoptic``: COCO panoptic records (``pan_seg_file_name`` + ``segments_info``), one contiguous
    id space: things 0..K-1, stuff K..K+S-1 (detectron2's COCO panoptic metadata convention).
Only ``register_u2seg`` imports detectron2; the record builders do not.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from u2seg.errors import UserError
from u2seg.manifest import image_path, image_stem, load_manifest

BOX_MODE_XYWH_ABS = 1  # detectron2.structures.BoxMode.XYWH_ABS


def _load(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"not found: {path}")
    with open(path) as fh:
        return json.load(fh)


def _annotations_by_image(instances: Any) -> dict[int, list[dict[str, Any]]]:
    """Pseudo-label json (``{"annotations": [...]}``) or predictions (``instances_results.json``, a list)."""
    anns = instances if isinstance(instances, list) else instances.get("annotations", [])
    out: dict[int, list[dict[str, Any]]] = {}
    for ann in anns:
        out.setdefault(int(ann["image_id"]), []).append(ann)
    return out


def separated_dicts(manifest_path: str | Path, instances_json: str | Path, semantic_dir: str | Path,
                    min_score: float = 0.0) -> list[dict[str, Any]]:
    """detectron2 records with instance annotations and ``sem_seg_file_name`` (one per manifest image).

    Predictions below ``min_score`` are left out (pseudo-labels have no score and are all kept).
    """
    manifest = load_manifest(manifest_path)
    by_image = _annotations_by_image(_load(instances_json))
    semantic_dir = Path(semantic_dir)
    records = []
    for im in manifest["images"]:
        sem = semantic_dir / f"{image_stem(im)}.png"
        if not sem.is_file():
            raise UserError(f"semantic PNG {sem} of image {im['file_name']} is missing")
        annotations = []
        for ann in by_image.get(int(im["id"]), []):
            if float(ann.get("score", 1.0)) < min_score:
                continue
            seg = ann["segmentation"]
            if list(seg.get("size", [])) != [im["height"], im["width"]]:
                raise UserError(f"{instances_json}: mask size {seg.get('size')} of image {im['file_name']} "
                                f"is not [height, width] = {[im['height'], im['width']]}")
            annotations.append({"bbox": [float(v) for v in ann["bbox"]], "bbox_mode": BOX_MODE_XYWH_ABS,
                                "category_id": int(ann["category_id"]) - 1, "segmentation": seg,
                                "iscrowd": int(ann.get("iscrowd", 0))})
        records.append({"file_name": str(image_path(manifest, im)), "height": int(im["height"]),
                        "width": int(im["width"]), "image_id": int(im["id"]), "annotations": annotations,
                        "sem_seg_file_name": str(sem)})
    return records


def panoptic_dicts(manifest_path: str | Path, panoptic_json: str | Path, panoptic_dir: str | Path
                   ) -> list[dict[str, Any]]:
    """COCO panoptic records (``load_coco_panoptic_json``'s format), contiguous ids over all categories."""
    manifest = load_manifest(manifest_path)
    pan = _load(panoptic_json)
    contiguous = {int(c["id"]): i for i, c in enumerate(pan["categories"])}
    things = {int(c["id"]) for c in pan["categories"] if c.get("isthing")}
    by_id = {int(im["id"]): im for im in manifest["images"]}
    records = []
    for ann in pan["annotations"]:
        im = by_id.get(int(ann["image_id"]))
        if im is None:
            raise UserError(f"{panoptic_json}: image_id {ann['image_id']} is not in {manifest_path}")
        label = Path(panoptic_dir) / ann["file_name"]
        if not label.is_file():
            raise UserError(f"panoptic PNG {label} is missing")
        segments = [{**s, "category_id": contiguous[int(s["category_id"])],
                     "isthing": int(s["category_id"]) in things} for s in ann["segments_info"]]
        records.append({"file_name": str(image_path(manifest, im)), "height": int(im["height"]),
                        "width": int(im["width"]), "image_id": int(im["id"]), "pan_seg_file_name": str(label),
                        "segments_info": segments})
    return records


def metadata(categories: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(separated metadata, panoptic metadata) from u2seg's panoptic categories (things 1..K, stuff K+1..)."""
    things = [c for c in categories if c.get("isthing")]
    stuff = [c for c in categories if not c.get("isthing")]
    separated = {
        "thing_classes": [c["name"] for c in things],
        "thing_dataset_id_to_contiguous_id": {int(c["id"]): i for i, c in enumerate(things)},
        "stuff_classes": ["things"] + [c["name"] for c in stuff],  # semantic PNG value 0 = every thing
        "stuff_dataset_id_to_contiguous_id": {int(c["id"]): i + 1 for i, c in enumerate(stuff)},
        "ignore_label": 255,
    }
    ordered = things + stuff
    panoptic = {
        "thing_classes": [c["name"] for c in things],
        "stuff_classes": [c["name"] for c in ordered],
        "thing_dataset_id_to_contiguous_id": {int(c["id"]): i for i, c in enumerate(things)},
        "stuff_dataset_id_to_contiguous_id": {int(c["id"]): i for i, c in enumerate(ordered)},
        "ignore_label": 0,
    }
    return separated, panoptic


def register_u2seg(name: str, manifest: str | Path, panoptic_json: str | Path,
                   instances_json: str | Path | None = None, semantic_dir: str | Path | None = None,
                   panoptic_dir: str | Path | None = None, min_score: float = 0.0) -> list[str]:
    """Register ``{name}_separated`` (when instances + semantic are given) and ``{name}_panoptic`` in
    detectron2's DatasetCatalog / MetadataCatalog; returns the registered names.

    Pseudo-labels: ``instances_json=.../pseudo/instances.json``, ``semantic_dir=.../pseudo/semantic``,
    ``panoptic_json=.../pseudo/panoptic.json``, ``panoptic_dir=.../pseudo/panoptic``. Predictions: the
    same with ``instances_results.json``, ``semantic/``, ``panoptic.json`` and ``panoptic/`` of a
    ``u2seg predict`` folder.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    categories = _load(panoptic_json)["categories"]
    meta_sep, meta_pan = metadata(categories)
    names = []
    if instances_json is not None and semantic_dir is not None:
        DatasetCatalog.register(f"{name}_separated",
                                lambda: separated_dicts(manifest, instances_json, semantic_dir, min_score))
        MetadataCatalog.get(f"{name}_separated").set(evaluator_type="coco_panoptic_seg", **meta_sep)
        names.append(f"{name}_separated")
    if panoptic_dir is not None:
        DatasetCatalog.register(f"{name}_panoptic", lambda: panoptic_dicts(manifest, panoptic_json, panoptic_dir))
        MetadataCatalog.get(f"{name}_panoptic").set(
            panoptic_root=str(panoptic_dir), panoptic_json=str(panoptic_json),
            evaluator_type="coco_panoptic_seg", **meta_pan)
        names.append(f"{name}_panoptic")
    return names
