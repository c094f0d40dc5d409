"""The panoptic merge of one feature shard (``u2seg merge-panoptic-shard``: a parallel job per shard).

Reads the shard's class-aware instances (``instances_shards/shard_{i:05d}.json`` written by
``u2seg cluster-instances --out-shards``) and the stuff PNGs of its images; writes the shard's COCO
panoptic json (plus its ``stats`` and gallery names, for ``u2seg concat-panoptic``) and a folder with
``panoptic/``, ``semantic/`` and ``gallery/`` PNGs. Memory and time depend on the shard, not on the
dataset (beyond reading the manifest).

Segment ids: shard i starts at 1 + sum over earlier shards of (annotations + images * S), an upper
bound of their segment count, so ids are unique in the whole dataset (as in ``u2seg merge-panoptic``,
with gaps between shards). When that bound exceeds the 24-bit RGB range (e.g. ImageNet with S = 27),
every shard starts at 1: ids are then unique within each shard (and image), as COCO panoptic requires;
the summary's ``segment_ids`` says which.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from u2seg.atomic import atomic_path, write_json
from u2seg.errors import UserError
from u2seg.gallery import gallery_indices
from u2seg.jsonio import load_json
from u2seg.manifest import shard_images
from u2seg.pseudo.io import read_manifest, save_png_plain
from u2seg.pseudo.panoptic.dataset import group_by_image, merge_images
from u2seg.pseudo.panoptic.merge import MAX_SEGMENT_ID, panoptic_categories

log = logging.getLogger(__name__)


def first_segment_id(index: dict[str, Any], shard: int, num_stuff: int) -> tuple[int, str]:
    """(first segment id of ``shard``, "dataset" or "shard": where ids are unique) from ``index.json``."""
    bounds = [int(s["annotations"]) + int(s["images"]) * num_stuff for s in index["shards"]]
    if sum(bounds) <= MAX_SEGMENT_ID:
        return 1 + sum(bounds[:shard]), "dataset"
    return 1, "shard"


def merge_shard(*, manifest_path: Path, instances_dir: Path, shard: int, shard_size: int, stuff_dir: Path, k: int,
                num_stuff: int, max_thing_overlap: float, gallery_size: int, max_merge_pixels: int, out_json: Path,
                out_dir: Path) -> int:
    """``u2seg merge-panoptic-shard``: the panoptic merge of one shard (its json + PNG folders)."""
    t_start = time.perf_counter()
    if not 0.0 <= max_thing_overlap <= 1.0:
        raise UserError(f"panoptic.max_thing_overlap must be in [0, 1], got {max_thing_overlap}")
    manifest = read_manifest(manifest_path)
    index = load_json(instances_dir / "index.json")
    if index.get("shard_size") != shard_size or not 0 <= shard < len(index.get("shards", [])):
        raise UserError(f"{instances_dir}/index.json was written for shard_size {index.get('shard_size')} "
                        f"and {len(index.get('shards', []))} shards; shard {shard} of size {shard_size} "
                        "asked: rerun cluster_instances")
    images = shard_images(manifest, shard, shard_size)
    source = instances_dir / f"shard_{shard:05d}.json"
    instances = load_json(source)
    if [im["id"] for im in instances.get("images", [])] != [im["id"] for im in images]:
        raise UserError(f"{source}: its images are not those of shard {shard} of the manifest: "
                        "rerun cluster_instances")
    by_image = group_by_image(instances, source, k, {im["id"] for im in images})
    del instances
    lo = shard * shard_size
    sample = {i - lo for i in gallery_indices(len(manifest["images"]), gallery_size)
              if lo <= i < lo + len(images)}
    first_id, scope = first_segment_id(index, shard, num_stuff)
    with atomic_path(out_dir, directory=True) as tmp:
        for sub in ("panoptic", "semantic", "gallery"):
            (tmp / sub).mkdir()
        images_out, annotations_out, tiles, stats, _ = merge_images(
            manifest, images, by_image, source, stuff_dir, k, num_stuff, max_thing_overlap,
            first_id, tmp / "panoptic", tmp / "semantic", sample, max_merge_pixels)
        for name, tile in tiles:
            save_png_plain(tmp / "gallery" / name, tile)
    stats.update(segment_ids=scope, gallery=[name for name, _ in tiles],
                 seconds=round(time.perf_counter() - t_start, 3))
    write_json(out_json, {
        "info": {"description": "u2seg panoptic pseudo-labels", "k": k, "num_stuff": num_stuff},
        "images": images_out, "annotations": annotations_out,
        "categories": panoptic_categories(k, num_stuff), "stats": stats})
    log.info("panoptic shard %d: %d images, %d/%d instances visible", shard, len(images_out),
             stats["visible_instances"], stats["instances"])
    return 0
