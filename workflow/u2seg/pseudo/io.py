"""Shared I/O of the pseudo-label CLIs: shard lists, MaskCut fragments, feature shards, PNG folders.

(torch and the feature store are imported where needed: the merge / validation CLIs run without them.)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from u2seg.errors import UserError
from u2seg.jsonio import load_json  # noqa: F401 (the pseudo CLIs import it from here)
from u2seg.manifest import image_stem, load_manifest, num_shards, shard_images


def set_threads(threads: int) -> None:
    """Use ``threads`` torch CPU threads (0 = torch default)."""
    if threads > 0:
        import torch  # here, not at the top: the panoptic merge / validation CLIs do not need torch

        torch.set_num_threads(threads)


def read_manifest(path: Path) -> dict[str, Any]:
    """Load the manifest with a clear error when it is missing."""
    if not Path(path).is_file():
        raise UserError(f"manifest not found: {path}")
    return load_manifest(path)


def shard_files(manifest: dict[str, Any], shard_size: int, folder: Path, suffix: str) -> list[Path]:
    """``folder/shard_{i:05d}{suffix}`` for every shard of the manifest (existence checked)."""
    paths = [Path(folder) / f"shard_{i:05d}{suffix}" for i in range(num_shards(manifest, shard_size))]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UserError(f"{len(missing)} shard file(s) missing, e.g. {missing[0]}")
    return paths


def shard_annotations(masks: dict[str, Any], images: list[dict[str, Any]],
                      source: Path) -> list[dict[str, Any]]:
    """Annotations of a MaskCut fragment ordered by manifest image order (then file order).

    Raises UserError for annotations of images outside the shard or RLE sizes that differ from the
    manifest's [height, width] (e.g. a width/height swap upstream)."""
    if not isinstance(masks.get("annotations"), list):
        raise UserError(f"{source}: not a COCO instances json (no 'annotations' list)")
    by_id = {im["id"]: im for im in images}
    rank = {im["id"]: i for i, im in enumerate(images)}
    out = []
    for pos, ann in enumerate(masks["annotations"]):
        im = by_id.get(ann.get("image_id"))
        if im is None:
            raise UserError(f"{source}: annotation {ann.get('id')} refers to image {ann.get('image_id')}, "
                            "which is not in this shard of the manifest (stale MaskCut output?)")
        seg = ann.get("segmentation")
        if not isinstance(seg, dict) or "counts" not in seg:
            raise UserError(f"{source}: annotation {ann.get('id')} has no RLE segmentation")
        if list(seg.get("size", [])) != [im["height"], im["width"]]:
            raise UserError(f"{source}: annotation {ann.get('id')} mask size {seg.get('size')} != image "
                            f"[height, width] {[im['height'], im['width']]} of {im['file_name']}")
        out.append((rank[im["id"]], pos, ann))
    return [a for _, _, a in sorted(out, key=lambda t: (t[0], t[1]))]


def check_shard_images(shard: Any, images: list[dict[str, Any]], path: Path) -> None:
    """The feature shard must hold exactly the manifest's shard images at their original sizes."""
    ids = np.asarray(shard["image_id"][:]).tolist()
    if ids != [im["id"] for im in images]:
        raise UserError(f"{path}: image ids do not match the manifest shard (stale features? rerun features)")
    sizes = np.asarray(shard["orig_size"][:]).tolist()
    if sizes != [[im["height"], im["width"]] for im in images]:
        raise UserError(f"{path}: original sizes do not match the manifest (stale features?)")


def iter_dense(path: Path) -> Iterator[np.ndarray]:
    """Dense maps (C, h, w) float32 of one feature shard, one image at a time."""
    from u2seg.features import open_shard  # imports torch: only where feature shards are read

    dense = open_shard(path)["dense"]
    for i in range(dense.shape[0]):
        yield np.asarray(dense[i], dtype=np.float32)


def shard_iter(manifest: dict[str, Any], shard_size: int) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """(shard index, images) of every shard."""
    for i in range(num_shards(manifest, shard_size)):
        yield i, shard_images(manifest, i, shard_size)


def png_name(image: dict[str, Any]) -> str:
    """Per-image PNG file name: the image stem + '.png'."""
    return image_stem(image) + ".png"


def read_png(path: Path) -> np.ndarray:
    """Read a PNG as a numpy array (clear error when missing)."""
    if not Path(path).is_file():
        raise UserError(f"PNG not found: {path}")
    with Image.open(path) as img:
        return np.asarray(img)


def save_png_plain(path: Path, array: np.ndarray) -> None:
    """Save a PNG into a folder that is itself being written atomically."""
    Image.fromarray(array).save(path, format="PNG")
