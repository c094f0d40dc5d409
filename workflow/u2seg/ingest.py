"""``u2seg ingest``: list a dataset's images into a manifest, reading every image robustly.

Unreadable images are listed with their reason in ``skipped.json``; the stage fails when more
than ``--max-skipped-fraction`` of the images are unreadable. Nothing is dropped silently.
"""
from __future__ import annotations

import argparse
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from u2seg import atomic, registry
from u2seg.cliargs import add_manifest_argument
from u2seg.errors import UserError
from u2seg.images import IMAGE_SUFFIXES, ImageReadError, probe_image
from u2seg.jsonio import load_json
from u2seg.manifest import assign_stems
from u2seg.params import add_dataclass_arguments, record_beside

log = logging.getLogger(__name__)

# Manifest / CLI kind of a COCO-format dataset named in config `datasets` (coco is its special case).
COCO_FORMAT = "coco-format"


def _sample_loaders() -> dict[str, Callable[[], np.ndarray]]:
    import skimage.data as data

    return {
        "astronaut": data.astronaut,
        "chelsea": data.chelsea,
        "coffee": data.coffee,
        "rocket": data.rocket,
        "motorcycle": lambda: data.stereo_motorcycle()[0],
        "hubble_deep_field": data.hubble_deep_field,
        "immunohistochemistry": data.immunohistochemistry,
        "retina": data.retina,
    }


def materialise_samples(out_dir: Path) -> Path:
    """Write the scikit-image sample photos as PNGs into ``out_dir`` (atomically, once)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, loader in _sample_loaders().items():
        target = out_dir / f"{name}.png"
        if not target.exists():
            atomic.save_png(target, np.ascontiguousarray(loader()[..., :3]))
    return out_dir


def list_images(root: Path) -> list[str]:
    """Relative paths (posix) of every image file under ``root``, recursively, sorted."""
    if not root.is_dir():
        raise UserError(f"images folder not found: {root}")
    files = [p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
             and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    return sorted(p.relative_to(root).as_posix() for p in files)


def coco_paths(root: Path, split: str) -> dict[str, Path | None]:
    """Locations of a COCO split's images, instance json and (optional) panoptic GT."""
    ann = root / "annotations"
    pan_json = ann / f"panoptic_{split}2017.json"
    pan_dir = ann / f"panoptic_{split}2017"
    return {
        "images": root / f"{split}2017",
        "instances": ann / f"instances_{split}2017.json",
        "panoptic_json": pan_json if pan_json.is_file() and pan_dir.is_dir() else None,
        "panoptic_dir": pan_dir if pan_json.is_file() and pan_dir.is_dir() else None,
    }


def _coco_json(path: Path, what: str) -> dict[str, Any]:
    """A COCO json (instances or panoptic) whose ``images`` entries have an id and a file_name."""
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise UserError(f"{path}: not a COCO {what} json (no `images` list)")
    for im in data["images"]:
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise UserError(f"{path}: every entry of `images` needs `id` and `file_name` (got {str(im)[:120]})")
        if not isinstance(im["id"], int) or isinstance(im["id"], bool):
            raise UserError(f"{path}: image ids must be integers (got {im['id']!r}); a cityscapesScripts json: "
                            "re-lay it with `u2seg cityscapes-panoptic --from-cityscapesscripts`")
    return data


def coco_format_sources(images_dir: Path, instances: Path | None, panoptic_json: Path | None,
                        panoptic_dir: Path | None, limit: int | None = None
                        ) -> tuple[Path, list[str], dict[str, int], str | None, dict[str, str] | None]:
    """Images and ground truth of a COCO-format dataset.

    Images (and their ids) come from the instances json, else from the panoptic json; sorted by id,
    the first ``limit`` kept. A panoptic json must annotate every listed image. Returns
    (images folder, relative paths, {path: id}, instances json or None, {json, png_dir} or None).
    """
    if instances is None and panoptic_json is None:
        raise UserError("a COCO-format dataset needs `instances` (COCO instances json) and/or `panoptic` "
                        "(COCO panoptic json) + `panoptic_dir`")
    if (panoptic_json is None) != (panoptic_dir is None):
        raise UserError("a COCO panoptic ground truth needs both `panoptic` (the json) and `panoptic_dir` "
                        "(the folder of its PNGs)")
    if not Path(images_dir).is_dir():
        raise UserError(f"images folder not found: {images_dir}")
    for path, key in ((instances, "instances"), (panoptic_json, "panoptic")):
        if path is not None and not Path(path).is_file():
            raise UserError(f"{key} json not found: {path}")
    if panoptic_dir is not None and not Path(panoptic_dir).is_dir():
        raise UserError(f"panoptic_dir (folder of panoptic PNGs) not found: {panoptic_dir}")
    pan = _coco_json(Path(panoptic_json), "panoptic") if panoptic_json is not None else None
    images = (_coco_json(Path(instances), "instances") if instances is not None else pan)["images"]
    images = sorted(images, key=lambda im: int(im["id"]))
    if limit:
        images = images[:limit]
    if pan is not None:
        annotated = {int(a["image_id"]) for a in pan.get("annotations", [])}
        missing = [int(im["id"]) for im in images if int(im["id"]) not in annotated]
        if missing:
            raise UserError(f"{panoptic_json}: {len(missing)} images have no panoptic annotation "
                            f"(e.g. image id {missing[0]})")
    rel_paths = [str(im["file_name"]) for im in images]
    ids = {str(im["file_name"]): int(im["id"]) for im in images}
    if len(ids) != len(images):
        raise UserError("the COCO json lists the same file_name twice")
    panoptic = ({"json": str(Path(panoptic_json).resolve()), "png_dir": str(Path(panoptic_dir).resolve())}
                if panoptic_json is not None else None)
    return (Path(images_dir), rel_paths, ids, str(Path(instances).resolve()) if instances is not None else None,
            panoptic)


@dataclass
class IngestParams:
    """Image checks of ``u2seg ingest`` (the workflow passes config ``ingest``)."""

    max_side: int = 20000  # images with a longer side (pixels) are skipped as too large (decompression bombs)
    min_side: int = 8  # images with a shorter side (pixels) are skipped as too small
    max_skipped_fraction: float = 0.2  # fail when more than this fraction of the files is unreadable
    workers: int = 2  # processes reading the images


def _probe(root: Path, rel: str, max_side: int, min_side: int) -> tuple[str, tuple[int, int] | str]:
    try:
        width, height = probe_image(root / rel, max_side=max_side, min_side=min_side)
    except ImageReadError as exc:
        return rel, str(exc).replace(str(root / rel) + ": ", "")
    return rel, (int(width), int(height))


def probe_images(root: Path, rel_paths: list[str], max_side: int, min_side: int,
                 workers: int = 2) -> tuple[dict[str, tuple[int, int]], list[dict[str, str]]]:
    """Decode every image once: returns ({rel: (width, height)}, skipped [{file_name, reason}])."""
    sizes: dict[str, tuple[int, int]] = {}
    skipped: list[dict[str, str]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(lambda r: _probe(root, r, max_side, min_side), rel_paths)
        for rel, res in tqdm(results, total=len(rel_paths), desc="ingest", unit="img"):
            if isinstance(res, str):
                skipped.append({"file_name": rel, "reason": res})
            else:
                sizes[rel] = res
    return sizes, skipped


def build_manifest(kind: str, root: Path, split: str | None = None, limit: int | None = None,
                   max_side: int = IngestParams.max_side, min_side: int = IngestParams.min_side,
                   workers: int = IngestParams.workers,
                   samples_dir: Path | None = None, instances: Path | None = None,
                   panoptic_json: Path | None = None, panoptic_dir: Path | None = None,
                   name: str | None = None) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Build the manifest and the skipped list for a dataset (pure apart from reading images).

    ``kind`` coco-format: ``root`` is the image folder, ``instances`` and/or ``panoptic_json`` +
    ``panoptic_dir`` the ground truth (``name`` is recorded in the manifest).
    """
    dataset: dict[str, Any] = {"kind": kind}
    annotations = None
    panoptic = None
    if kind == "samples":
        if samples_dir is None:
            raise ValueError("samples need an output folder for the photos")
        root = materialise_samples(samples_dir)
        rel_paths = list_images(root)
        ids = {rel: i + 1 for i, rel in enumerate(rel_paths)}
    elif kind == "images":
        rel_paths = list_images(root)
        if not rel_paths:
            raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {root}")
        ids = {rel: i + 1 for i, rel in enumerate(rel_paths)}
    elif kind == "coco":
        if split is None:
            raise UserError("dataset=coco needs a split (train or val)")
        paths = coco_paths(root, split)
        if not paths["instances"].is_file():
            raise UserError(
                f"COCO annotations not found: {paths['instances']} (set `coco_root` to a COCO root with "
                f"{split}2017/ and annotations/instances_{split}2017.json)")
        if not paths["images"].is_dir():
            raise UserError(f"COCO images folder not found: {paths['images']}")
        root, rel_paths, ids, annotations, panoptic = coco_format_sources(
            paths["images"], paths["instances"], paths["panoptic_json"], paths["panoptic_dir"], limit)
        dataset.update(split=split, limit=limit)
    elif kind == COCO_FORMAT:
        # any image folder + a COCO instances json and/or a COCO panoptic json + PNG folder
        root, rel_paths, ids, annotations, panoptic = coco_format_sources(
            root, instances, panoptic_json, panoptic_dir, limit)
        dataset.update(name=name, limit=limit)
    else:
        raise UserError(f"unknown dataset kind {kind!r} (samples, images, coco or {COCO_FORMAT})")
    root = root.resolve()
    dataset["root"] = str(root)
    sizes, skipped = probe_images(root, rel_paths, max_side, min_side, workers)
    images = [{"id": ids[rel], "file_name": rel, "width": sizes[rel][0], "height": sizes[rel][1]}
              for rel in rel_paths if rel in sizes]
    assign_stems(images)  # a.jpg + a.png would otherwise share per-image output names
    manifest = {"dataset": dataset, "root": str(root), "images": images,
                "annotations": annotations, "panoptic": panoptic,
                "num_skipped": len(skipped)}
    return manifest, skipped


def check_skipped(n_total: int, skipped: list[dict[str, str]], max_fraction: float) -> None:
    """Raise UserError when more than ``max_fraction`` of the images were unreadable."""
    if n_total == 0:
        raise UserError("the dataset has no images")
    frac = len(skipped) / n_total
    if frac > max_fraction or len(skipped) == n_total:
        examples = "; ".join(f"{s['file_name']}: {s['reason']}" for s in skipped[:5])
        raise UserError(
            f"{len(skipped)} of {n_total} images ({frac:.1%}) could not be read, more than "
            f"ingest.max_skipped_fraction={max_fraction}. First reasons: {examples}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", required=True, choices=["samples", "images", "coco", COCO_FORMAT],
                        help="dataset kind: samples (bundled photos), images (a folder, --root), coco (--root, "
                             "--split) or coco-format (--root images + --instances and/or --panoptic-json)")
    parser.add_argument("--root", type=Path, help="images folder (images, coco-format) or COCO root (coco)")
    parser.add_argument("--instances", type=Path, help="coco-format: COCO instances json")
    parser.add_argument("--panoptic-json", type=Path, help="coco-format: COCO panoptic json")
    parser.add_argument("--panoptic-dir", type=Path, help="coco-format: folder of the panoptic PNGs")
    parser.add_argument("--name", help="coco-format: the dataset's name in config `datasets`")
    parser.add_argument("--split", choices=["train", "val"], help="COCO split")
    parser.add_argument("--limit", type=int, default=None, help="first N COCO (coco-format) images by id")
    parser.add_argument("--samples-dir", type=Path, help="where the sample photos are written")
    add_dataclass_arguments(parser, IngestParams)
    add_manifest_argument(parser, "output manifest json")
    parser.add_argument("--skipped", type=Path, required=True, help="output skipped json")


def config_out(args: argparse.Namespace) -> str | None:
    """Resolved-config record of this run (written by u2seg.cli after a successful run)."""
    return record_beside(args.manifest)


def run(args: argparse.Namespace) -> int:
    if registry.DATASET_KINDS[args.kind].needs_root and args.root is None:
        raise UserError(f"--root is required for dataset kind {args.kind}")
    manifest, skipped = build_manifest(
        args.kind, args.root or Path("."), split=args.split, limit=args.limit,
        max_side=args.max_side, min_side=args.min_side, workers=args.workers,
        samples_dir=args.samples_dir, instances=args.instances, panoptic_json=args.panoptic_json,
        panoptic_dir=args.panoptic_dir, name=args.name)
    n_total = len(manifest["images"]) + len(skipped)
    for s in skipped:
        log.warning("skipped %s: %s", s["file_name"], s["reason"])
    atomic.write_json(args.skipped, {"num_images": n_total, "skipped": skipped}, indent=1)
    check_skipped(n_total, skipped, args.max_skipped_fraction)
    atomic.write_json(args.manifest, manifest, indent=1)
    log.info("manifest: %d images (%d skipped) -> %s", len(manifest["images"]), len(skipped), args.manifest)
    return 0
