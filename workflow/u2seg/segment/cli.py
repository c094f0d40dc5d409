"""``u2seg segment``: segment image files, folders or globs with a model (name or path) -> overlays
(``overlays/<stem>.png``) plus what ``u2seg predict`` writes (``instances_results.json``, ``panoptic.json``
+ ``panoptic/``, ``semantic/``, ``summary.json``), the images read (``manifest.json``) and the unreadable
ones with their reason (``skipped.json``), read as ``u2seg ingest`` reads them."""
from __future__ import annotations

import argparse
import glob
import logging
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

from u2seg.cliargs import add_progress_argument, add_threads_argument
from u2seg.detector.params import PredictConfig
from u2seg.errors import UserError
from u2seg.ingest import IngestParams
from u2seg.params import add_dataclass_arguments, record_inside

log = logging.getLogger(__name__)

MODEL_OWN = ("min_size", "max_size", "batch_size")  # flags whose default is the model file's own


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Inputs, model, output folder, inference settings (test size: the model's own) and image checks."""
    parser.add_argument("inputs", nargs="+", help="image files, folders (searched recursively) or globs")
    parser.add_argument("--model", required=True,
                        help="a model name (`u2seg info --list`), a u2seg model file or a detectron2 checkpoint")
    parser.add_argument("--out-dir", required=True, type=Path,
                        help="folder for overlays/, instances_results.json, panoptic.json, panoptic/, semantic/")
    parser.add_argument("--min-size", type=int, default=None, help="test size: short side (default: the model's)")
    parser.add_argument("--max-size", type=int, default=None, help="test size: long side cap (default: the model's)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"images per forward pass, of one padded size (default: {PredictConfig.batch_size})")
    parser.add_argument("--no-overlays", action="store_true", help="write the standard files only")
    add_threads_argument(parser)
    add_progress_argument(parser)
    add_dataclass_arguments(parser, PredictConfig, exclude=MODEL_OWN)
    add_dataclass_arguments(parser, IngestParams, exclude=("max_skipped_fraction", "workers"))


def config_out(args: argparse.Namespace) -> str | None:
    """Resolved-config record of this run (written by u2seg.cli after a successful run)."""
    return record_inside(args.out_dir)


def collect_images(inputs: list[str]) -> list[Path]:
    """Absolute image paths of files, folders (recursively, as ingest lists them) and globs; sorted per input,
    duplicates dropped. UserError for an input that names nothing, or when there is no image at all."""
    from u2seg.images import IMAGE_SUFFIXES
    from u2seg.ingest import list_images

    out: dict[Path, None] = {}
    for text in inputs:
        path = Path(text).expanduser()
        if path.is_dir():
            found = [path / rel for rel in list_images(path)]
        elif path.is_file():
            found = [path]
        else:
            found = [Path(p) for p in sorted(glob.glob(os.path.expanduser(text), recursive=True))
                     if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_SUFFIXES]
            if not found:
                raise UserError(f"{text}: no such file or folder, and no image matches it as a glob")
        out.update((p.resolve(), None) for p in found)
    if not out:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {' '.join(inputs)}")
    return list(out)


def images_manifest(paths: list[Path], max_side: int, min_side: int,
                    workers: int = IngestParams.workers) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """A manifest of ``paths`` (root: their common folder), probed as ingest probes them, and the skipped list."""
    from u2seg.ingest import probe_images
    from u2seg.manifest import assign_stems

    root = Path(os.path.commonpath([str(p.parent) for p in paths]))
    rel_paths = [p.relative_to(root).as_posix() for p in paths]
    sizes, skipped = probe_images(root, rel_paths, max_side, min_side, workers)
    images = [{"id": i + 1, "file_name": rel, "width": sizes[rel][0], "height": sizes[rel][1]}
              for i, rel in enumerate(rel_paths) if rel in sizes]
    assign_stems(images)
    return {"dataset": {"kind": "segment"}, "root": str(root), "images": images, "annotations": None,
            "num_skipped": len(skipped)}, skipped


def segment(inputs: list[str], model: str, out_dir: str | Path, device: str = "auto", overlays: bool = True,
            progress: bool = True, max_side: int = IngestParams.max_side, min_side: int = IngestParams.min_side,
            **settings: Any) -> dict[str, Any]:
    """Segment the images of ``inputs`` with ``model`` into ``out_dir``; ``settings``: PredictConfig fields
    (None: the model's own). Returns the summary (with ``skipped``)."""
    from PIL import Image

    from u2seg.atomic import atomic_path, write_json
    from u2seg.detector.predict import write_predictions
    from u2seg.manifest import image_path, image_stem
    from u2seg.segment.api import load_model

    paths = collect_images(inputs)
    manifest, skipped = images_manifest(paths, max_side, min_side)
    for s in skipped:
        log.warning("skipped %s: %s", s["file_name"], s["reason"])
    if not manifest["images"]:
        raise UserError(f"none of the {len(paths)} images could be read; first: "
                        f"{skipped[0]['file_name']}: {skipped[0]['reason']}")
    seg = load_model(model, device=device, progress=progress, **settings)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "manifest.json", manifest, indent=1)
    write_json(out / "skipped.json", {"num_images": len(paths), "skipped": skipped}, indent=1)
    with atomic_path(out / "overlays", directory=True) as ov_dir:
        def on_image(im: dict[str, Any], pred: Any, outputs: Any) -> None:
            if overlays:
                source = image_path(manifest, im)
                Image.fromarray(seg.result(pred, outputs, source).draw()).save(ov_dir / f"{image_stem(im)}.png")

        summary = write_predictions(seg.model, seg.obj, manifest, out, seg.config, seg.device, seg.path,
                                    progress, on_image, what="segment")
    summary["skipped"] = len(skipped)
    log.info("segmented %d images (%d skipped) -> %s", summary["images"], len(skipped), out)
    return summary


def run(args: argparse.Namespace) -> int:
    """Segment and write the outputs."""
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    settings = {f.name: getattr(args, f.name) for f in fields(PredictConfig) if f.name != "device"}
    segment(args.inputs, args.model, args.out_dir, args.device, not args.no_overlays, not args.no_progress,
            args.max_side, args.min_side, **settings)
    return 0
