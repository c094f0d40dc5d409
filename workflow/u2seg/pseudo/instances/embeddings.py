"""Instance embedding files (``u2seg embed``): one embedding per MaskCut mask of one feature shard.

Output ``.npz``: ``embeddings`` (n, D) float32, ``image_id`` (n,) int64, ``ann_index`` (n,) int64
(position of the mask in the shard's MaskCut json ``annotations``), ``meta`` (json string:
method, backbone, dim, dropped empty masks). Rows follow manifest image order, then file order.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from u2seg.atomic import atomic_path
from u2seg.coco_format import decode_mask
from u2seg.errors import UserError
from u2seg.features import open_shard
from u2seg.images import load_rgb
from u2seg.manifest import image_path, shard_images
from u2seg.pseudo.instances.embed import crop_embeddings, crop_instance, pooled_embeddings
from u2seg.pseudo.io import check_shard_images, load_json, read_manifest, set_threads, shard_annotations

if TYPE_CHECKING:
    from u2seg.features import ShardArrays

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


def embed_shard(*, manifest_path: Path, shard: int, shard_size: int, masks_path: Path, features_path: "Path | ShardArrays",
                method: str, backbone_name: str | None, weights: str, background: list[int], margin: float,
                crop_size: int, batch_size: int, device: str, threads: int | None, out_path: Path) -> int:
    """``u2seg embed``: one embedding per MaskCut mask of one shard -> the shard's embedding file."""
    set_threads(threads)
    t0 = time.perf_counter()
    manifest = read_manifest(manifest_path)
    try:
        images = shard_images(manifest, shard, shard_size)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    fragment = load_json(masks_path)
    anns = shard_annotations(fragment, images, masks_path)
    index_of = {id(a): i for i, a in enumerate(fragment["annotations"])}
    by_image: dict[int, list[dict]] = {}
    for ann in anns:
        by_image.setdefault(ann["image_id"], []).append(ann)

    store = open_shard(features_path)
    check_shard_images(store, images, features_path)
    backbone = None
    if method == "crop_cls":
        if not backbone_name:
            raise UserError("embedding.method=crop_cls needs --backbone")
        from u2seg.backbones import build_backbone

        backbone = build_backbone(backbone_name, weights or None, device)
        if crop_size % backbone.stride:
            raise UserError(f"embedding.crop_size={crop_size} is not a multiple of the "
                            f"{backbone.name} stride {backbone.stride}")
        dim = int(backbone.global_dim)
    else:
        dim = int(store["dense"].shape[1])

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
        if method == "pooled":
            emb = pooled_embeddings(np.asarray(store["dense"][i], dtype=np.float32), masks)
        else:
            rgb = load_rgb(image_path(manifest, im))
            if rgb.shape[:2] != (im["height"], im["width"]):
                raise UserError(f"{im['file_name']}: size changed since ingestion; rerun the pipeline")
            crops = [crop_instance(rgb, m, background, margin) for m in masks]
            emb = crop_embeddings(backbone, crops, crop_size, batch_size)
        rows.append(emb)
        image_ids += [im["id"]] * len(kept)
        ann_index += [index_of[id(a)] for a in kept]
    embeddings = np.concatenate(rows) if rows else np.zeros((0, dim), dtype=np.float32)
    meta = {"method": method, "backbone": backbone.name if backbone else store.attrs.get("backbone"),
            "dim": dim, "shard": shard, "images": len(images), "instances": len(image_ids),
            "dropped_empty": dropped, "seconds": round(time.perf_counter() - t0, 3)}
    if method == "crop_cls":
        meta.update(background=list(background), margin=margin, crop_size=crop_size)
    save_embeddings(out_path, embeddings, np.array(image_ids, dtype=np.int64), np.array(ann_index, dtype=np.int64),
                    meta)
    log.info("shard %d: %d embeddings (dim %d, %s) -> %s", shard, len(image_ids), dim, method, out_path)
    return 0
