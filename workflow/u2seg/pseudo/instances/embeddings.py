"""``u2seg embed``: one embedding per MaskCut mask of one feature shard.

Output ``.npz``: ``embeddings`` (n, D) float32, ``image_id`` (n,) int64, ``ann_index`` (n,) int64
(position of the mask in the shard's MaskCut json ``annotations``), ``meta`` (json string:
method, backbone, dim, dropped empty masks). Rows follow manifest image order, then file order.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from u2seg.atomic import atomic_path
from u2seg.cliargs import add_device_arguments
from u2seg.coco_format import decode_mask
from u2seg.errors import UserError
from u2seg.features import open_shard
from u2seg.images import load_rgb
from u2seg.manifest import image_path, shard_images
from u2seg.pseudo.instances.embed import crop_embeddings, crop_instance, pooled_embeddings
from u2seg.pseudo.io import check_shard_images, load_json, read_manifest, set_threads, shard_annotations

log = logging.getLogger(__name__)


def save_embeddings(path: Path, embeddings: np.ndarray, image_ids: np.ndarray, ann_index: np.ndarray,
                    meta: dict[str, Any]) -> None:
    """Atomically write the per-shard embedding file."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, embeddings=np.asarray(embeddings, np.float32), image_id=np.asarray(image_ids, np.int64),
                     ann_index=np.asarray(ann_index, np.int64), meta=np.array(json.dumps(meta)))


def load_embeddings(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """(embeddings, image_id, ann_index, meta) of a per-shard embedding file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return (data["embeddings"], data["image_id"], data["ann_index"], json.loads(str(data["meta"])))
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"{path}: not a u2seg embedding file ({exc})") from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", type=Path, required=True, help="dataset manifest json (from `u2seg ingest`)")
    parser.add_argument("--shard", type=int, required=True, help="shard index")
    parser.add_argument("--shard-size", type=int, required=True,
                        help="images per feature shard (config features.shard_size)")
    parser.add_argument("--masks", type=Path, required=True, help="the shard's MaskCut json")
    parser.add_argument("--features", type=Path, required=True, help="the shard's feature store (.zarr)")
    parser.add_argument("--method", choices=["pooled", "crop_cls"], default="pooled",
                        help="pooled: mask-weighted mean of the shard's dense features; crop_cls: masked crop through the backbone")
    parser.add_argument("--backbone", default=None, help="crop_cls: backbone name")
    parser.add_argument("--weights", default="", help="crop_cls: weights path or URL ('' = default)")
    parser.add_argument("--background", type=int, nargs=3, default=[0, 0, 0], metavar=("R", "G", "B"),
                        help="crop_cls: colour painted outside the mask")
    parser.add_argument("--margin", type=float, default=0.0, help="crop margin, fraction of the box size")
    parser.add_argument("--crop-size", type=int, default=480,
                        help="crop_cls: crops are resized to this square size (pixels)")
    parser.add_argument("--batch-size", type=int, default=16, help="crops per forward pass (crop_cls)")
    add_device_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="output .npz")


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    t0 = time.perf_counter()
    manifest = read_manifest(args.manifest)
    try:
        images = shard_images(manifest, args.shard, args.shard_size)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    fragment = load_json(args.masks)
    anns = shard_annotations(fragment, images, args.masks)
    index_of = {id(a): i for i, a in enumerate(fragment["annotations"])}
    by_image: dict[int, list[dict]] = {}
    for ann in anns:
        by_image.setdefault(ann["image_id"], []).append(ann)

    shard = open_shard(args.features)
    check_shard_images(shard, images, args.features)
    backbone = None
    if args.method == "crop_cls":
        if not args.backbone:
            raise UserError("embedding.method=crop_cls needs --backbone")
        from u2seg.backbones import build_backbone

        backbone = build_backbone(args.backbone, args.weights or None, args.device)
        if args.crop_size % backbone.stride:
            raise UserError(f"embedding.crop_size={args.crop_size} is not a multiple of the "
                            f"{backbone.name} stride {backbone.stride}")
        dim = int(backbone.global_dim)
    else:
        dim = int(shard["dense"].shape[1])

    rows, image_ids, ann_index = [], [], []
    dropped = 0
    for i, im in enumerate(images):
        image_anns = by_image.get(im["id"], [])
        masks, kept = [], []
        for ann in image_anns:
            m = decode_mask(ann["segmentation"], im["height"], im["width"])
            if not m.any():
                dropped += 1
                log.warning("%s: annotation %s has an empty mask; skipped", im["file_name"], ann.get("id"))
                continue
            masks.append(m)
            kept.append(ann)
        if not masks:
            continue
        if args.method == "pooled":
            emb = pooled_embeddings(np.asarray(shard["dense"][i], dtype=np.float32), masks)
        else:
            rgb = load_rgb(image_path(manifest, im))
            if rgb.shape[:2] != (im["height"], im["width"]):
                raise UserError(f"{im['file_name']}: size changed since ingestion; rerun the pipeline")
            crops = [crop_instance(rgb, m, args.background, args.margin) for m in masks]
            emb = crop_embeddings(backbone, crops, args.crop_size, args.batch_size)
        rows.append(emb)
        image_ids += [im["id"]] * len(kept)
        ann_index += [index_of[id(a)] for a in kept]
    embeddings = np.concatenate(rows) if rows else np.zeros((0, dim), dtype=np.float32)
    meta = {"method": args.method, "backbone": backbone.name if backbone else shard.attrs.get("backbone"),
            "dim": dim, "shard": args.shard, "images": len(images), "instances": len(image_ids),
            "dropped_empty": dropped, "seconds": round(time.perf_counter() - t0, 3)}
    if args.method == "crop_cls":
        meta.update(background=list(args.background), margin=args.margin, crop_size=args.crop_size)
    save_embeddings(args.out, embeddings, np.array(image_ids, dtype=np.int64), np.array(ann_index, dtype=np.int64),
                    meta)
    log.info("shard %d: %d embeddings (dim %d, %s) -> %s", args.shard, len(image_ids), dim, args.method, args.out)
    return 0
